"""The MMoE paper's synthetic tasks: their correlation follows p, identical weights leave
only the noise between the tasks, bad arguments are named."""

import numpy as np
import pytest

from mtl_tf.data.synthetic import task_pair


def test_identical_weights_leave_only_the_noise_between_the_tasks():
    x, y1, y2 = task_pair(20_000, 1.0, seed=1)
    assert x.shape == (20_000, 100) and y1.shape == y2.shape == (20_000,)
    assert np.std(y1 - y2) == pytest.approx(0.01 * np.sqrt(2), rel=0.05)
    _, z1, z2 = task_pair(100, 1.0, noise_std=0.0, seed=1)
    np.testing.assert_array_equal(z1, z2)


def test_the_labels_correlation_grows_with_the_weights_cosine():
    """The paper's Figure 2: the label correlation is a monotone function of p."""
    correlations = [np.corrcoef(*task_pair(20_000, p, seed=2)[1:])[0, 1] for p in (0.0, 0.5, 0.9, 1.0)]
    assert all(a < b for a, b in zip(correlations, correlations[1:]))
    assert abs(correlations[0]) < 0.05 and correlations[-1] > 0.99


def test_the_least_squares_slope_is_steins_expectation():
    """y = z + sum_i sin(alpha_i z + beta_i), z = w . x ~ N(0, 1) with ||w|| = c = 1: by
    Stein's lemma the least squares fit of y on x is s w with
    s = E[dy/dz] = 1 + sum_i alpha_i exp(-alpha_i^2 / 2) cos(beta_i), alpha_i = i,
    beta_i = (i - 1)^2 (the generator's constants)."""
    alpha, beta = np.arange(1, 11), np.arange(10) ** 2
    slope = 1 + np.sum(alpha * np.exp(-alpha ** 2 / 2) * np.cos(beta))
    x, y1, _ = task_pair(200_000, 0.5, noise_std=0.0, seed=3)
    w, *_ = np.linalg.lstsq(x.astype(np.float64), y1, rcond=None)
    assert np.linalg.norm(w) == pytest.approx(slope, rel=0.02)


@pytest.mark.parametrize("kwargs, message", [({"correlation": 1.5}, "correlation=1.5"), ({"dim": 1}, "dim=1")])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        task_pair(10, **{"correlation": 0.5, **kwargs})
