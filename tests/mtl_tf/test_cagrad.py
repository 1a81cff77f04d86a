"""CAGrad's exact dual solution against an exhaustive one over supports and against the
duality certificate, where 100 mirror-descent steps were 1-7% off and failed on norms
orders of magnitude apart: many tasks, nearly opposite gradients, a zero gradient,
duplicated tasks, Pareto-stationary gradients."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from mtl_tf import weighting


def _dual(grads, w, c):
    """F(w) = g_w . g0 + c ||g0|| ||g_w||, the paper's dual objective (its Eq. 4)."""
    g0 = grads.mean(axis=0)
    gw = w @ grads
    return gw @ g0 + c * np.linalg.norm(g0) * np.linalg.norm(gw)


def _exhaustive(grads, c, allowed):
    """The dual's minimiser by brute force over the supports S of the allowed tasks. On
    the affine hull of S, stationarity reads b + r K v / s = lam 1 (K the Gram matrix
    of S, b = K g0, r = c ||g0||, s = ||g_v||), so v is proportional to
    K^-1 (lam 1 - b) with r^2 = (lam 1 - b)^T K^-1 (lam 1 - b), a quadratic in lam."""
    t = len(grads)
    g0 = grads.mean(axis=0)
    r = c * np.linalg.norm(g0)
    best, best_w = np.inf, None
    tasks = [i for i in range(t) if allowed[i]]
    for k in range(1, len(tasks) + 1):
        for support in map(list, itertools.combinations(tasks, k)):
            gs = grads[support]
            gram, b = gs @ gs.T, gs @ g0
            if k == 1:
                v = np.ones(1)
            else:
                if np.linalg.matrix_rank(gram) < k:
                    continue  # a face with a duplicate: its minimum is on a smaller one
                inv = np.linalg.inv(gram)
                u, vb = inv @ np.ones(k), inv @ b
                a, beta, gamma = u.sum(), vb.sum(), b @ vb
                disc = beta**2 - a * (gamma - r**2)
                if disc < 0:
                    continue
                lam = (beta + np.sqrt(disc)) / a
                v = (lam * u - vb) / (lam * a - beta)
            if (v >= -1e-12).all():
                w = np.zeros(t)
                w[support] = v
                if _dual(grads, w, c) < best:
                    best, best_w = _dual(grads, w, c), w
    return best, best_w


def _cagrad(grads, c=0.5):
    """Our weights and direction d (undoing the T / (1 + c^2) scaling)."""
    t = len(grads)
    strategy = weighting.get("cagrad", c=c).build(t)
    combined, w = strategy.combine(tf.constant(grads, tf.float64), tf.ones(t, tf.float64))
    return w.numpy(), combined.numpy() * (1 + c**2) / t


def _cases():
    rng = np.random.default_rng(0)
    yield "random T=3", rng.normal(size=(3, 8))
    yield "random T=6", rng.normal(size=(6, 8))
    yield "nearly opposite", np.array([[1.0, 0.01, 0.0], [-1.0, 0.02, 0.0], [0.0, -1.0, 1e-3]])
    yield "norms 282, 3.8, 0.02", np.diag([282.0, 3.8, 0.02]) @ rng.normal(size=(3, 8))
    yield "a zero gradient", np.r_[rng.normal(size=(3, 8)), np.zeros((1, 8))]
    yield "duplicated tasks", rng.normal(size=(3, 8))[[0, 0, 1, 2, 2, 2]]
    yield "scales 1e-2 to 1e3", rng.normal(size=(6, 8)) * np.logspace(-2, 3, 6)[:, None]


@pytest.mark.parametrize("name, grads", list(_cases()), ids=[n for n, _ in _cases()])
@pytest.mark.parametrize("c", [0.5, 2.0])
def test_the_dual_minimum_equals_the_exhaustive_one(name, grads, c):
    allowed = np.linalg.norm(grads, axis=1) > 0
    want, _ = _exhaustive(grads, c, allowed)
    w, d = _cagrad(grads, c)
    scale = (grads**2).sum(axis=1).max()
    assert w.min() >= 0 and w.sum() == pytest.approx(1.0, abs=1e-12)
    assert _dual(grads, w, c) == pytest.approx(want, rel=1e-9, abs=1e-12 * scale)
    # Strong duality: d reaches the dual's value on every task that has a gradient.
    assert (grads[allowed] @ d).min() == pytest.approx(want, rel=1e-9, abs=1e-10 * scale)


@pytest.mark.parametrize("seed", range(4))
def test_norms_orders_of_magnitude_apart_weigh_the_small_gradients_exactly(seed):
    grads = np.diag([282.0, 3.8, 0.02]) @ np.random.default_rng(seed).normal(size=(3, 8))
    w, d = _cagrad(grads)
    _, want = _exhaustive(grads, 0.5, [True] * 3)
    np.testing.assert_allclose(w, want, atol=1e-9)
    assert w[0] < 1e-3  # the large gradient barely counts
    # g0 is in the ball, so d's worst task does at least as well as g0's.
    assert (grads @ d).min() >= (grads @ grads.mean(axis=0)).min()


@pytest.mark.parametrize("t", [20, 50])
def test_the_duality_gap_is_zero_at_many_tasks(t):
    """Beyond exhaustive search, the certificate: for any d in the ball and any w,
    min_i g_i . d <= F(w); ours meet with equality, so both are optimal."""
    rng = np.random.default_rng(t)
    grads = rng.normal(size=(t, 16)) * 10 ** rng.uniform(-2, 3, size=(t, 1))
    w, d = _cagrad(grads)
    g0 = grads.mean(axis=0)
    assert np.linalg.norm(d - g0) == pytest.approx(0.5 * np.linalg.norm(g0), rel=1e-9)
    scale = (grads**2).sum(axis=1).max()
    assert _dual(grads, w, 0.5) - (grads @ d).min() <= 1e-12 * scale


def test_a_zero_gradient_constrains_nothing():
    """The task with no gradient (no labelled example in the batch) is left out of the
    hull; the direction is CAGrad's on the others, g0 still the mean of all four."""
    rng = np.random.default_rng(5)
    grads = np.r_[rng.normal(size=(3, 8)), np.zeros((1, 8))]
    w, d = _cagrad(grads)
    want, want_w = _exhaustive(grads, 0.5, [True, True, True, False])
    np.testing.assert_allclose(w, want_w, atol=1e-9)
    g0 = grads.mean(axis=0)
    np.testing.assert_allclose(d, g0 + 0.5 * np.linalg.norm(g0) * (w @ grads) / np.linalg.norm(w @ grads),
                               atol=1e-12)


def test_pareto_stationary_gradients_get_the_mean_gradient():
    """0 lies in the hull of (1, 0), (-1, 0), (0, 1): the dual's minimum is 0 at g_w = 0,
    so no direction in the ball improves every task; the mean gradient (0, 1/3) is one
    of the primal's maximisers (min_i g_i . d = 0) and is what is returned."""
    grads = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    _, d = _cagrad(grads)
    np.testing.assert_allclose(d, [0.0, 1.0 / 3.0], atol=1e-12)
    assert (grads @ d).min() == pytest.approx(0.0, abs=1e-12)


def test_identical_tasks_step_along_their_gradient_and_c_zero_gives_the_mean():
    g = np.random.default_rng(1).normal(size=(1, 8))
    _, d = _cagrad(np.repeat(g, 3, axis=0))
    np.testing.assert_allclose(d, 1.5 * g[0], rtol=1e-12)  # g0 + c ||g0|| g0 / ||g0||
    grads = np.random.default_rng(2).normal(size=(4, 8))
    _, d = _cagrad(grads, c=0.0)
    np.testing.assert_allclose(d, grads.mean(axis=0), atol=1e-12)
