"""Each strategy's arithmetic on hand-made inputs."""

import math

import numpy as np
import pytest
import tensorflow as tf

from mtl_tf import weighting


def _weights_at(strategy, epoch, num_tasks=2):
    strategy.build(num_tasks)
    strategy.on_epoch_begin(epoch)
    return strategy.loss_weights(tf.ones([num_tasks])).numpy()


@pytest.mark.parametrize("epoch", [0, 5, 9, 10, 30])
def test_schedules_follow_their_formulas(epoch):
    # Task 0 is the main task (lambda_s), task 1 secondary (lambda_r = 1 - lambda_s).
    expected = {
        "stairs_t1": (0.0 if epoch < 10 else 1.0, {"t1": 10}),
        "lin": (min(epoch / 19, 1.0), {"epochs": 20}),
        "lin_t1": (min(epoch / 10, 1.0), {"t1": 10}),
        "exp_sigma": (1 - math.exp(-epoch / 40), {"sigma": 40}),
    }
    for name, (lambda_s, kwargs) in expected.items():
        w = _weights_at(weighting.get(name, **kwargs), epoch)
        np.testing.assert_allclose(w, [lambda_s, 1 - lambda_s], rtol=1e-6, atol=1e-7, err_msg=name)


def test_schedules_weigh_a_group_of_tasks():
    w = _weights_at(weighting.get("exp_sigma", sigma=40, main=[1]), 40, num_tasks=4)
    lam_s = 1 - math.exp(-1)
    np.testing.assert_allclose(w, [1 - lam_s, lam_s, 1 - lam_s, 1 - lam_s], rtol=1e-6)
    with pytest.raises(ValueError, match=r"main=\[5\]"):
        weighting.get("lin", epochs=3, main=[5]).build(2)


def test_fixed_and_equal_weights():
    assert _weights_at(weighting.get("fixed", weights=[2.0, 1.0]), 0).tolist() == [2.0, 1.0]
    assert _weights_at(weighting.get("equal"), 0).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match=r"weights=\[1.0\]"):
        weighting.get("fixed", weights=[1.0]).build(2)


def test_pcgrad_projects_two_conflicting_gradients():
    g1, g2 = np.array([1.0, 0.0]), np.array([-1.0, 1.0])
    combined, _ = weighting.get("pcgrad").build(2).combine(tf.constant([g1, g2], tf.float32),
                                                           tf.ones(2))
    p1 = g1 - g1 @ g2 / (g2 @ g2) * g2
    p2 = g2 - g2 @ g1 / (g1 @ g1) * g1
    np.testing.assert_allclose(combined.numpy(), p1 + p2, rtol=1e-6)
    # Gradients that agree are left alone.
    agree, _ = weighting.get("pcgrad").build(2).combine(tf.constant([[1.0, 0.0], [1.0, 1.0]]),
                                                        tf.ones(2))
    np.testing.assert_allclose(agree.numpy(), [2.0, 1.0])


def test_mgda_weights_equal_the_two_task_closed_form():
    g1, g2 = np.array([3.0, 1.0, 0.0]), np.array([-1.0, 2.0, 1.0])
    combined, w = weighting.get("mgda").build(2).combine(tf.constant([g1, g2], tf.float32),
                                                         tf.ones(2))
    alpha = np.clip((g2 - g1) @ g2 / np.sum((g1 - g2) ** 2), 0, 1)
    np.testing.assert_allclose(w.numpy(), [alpha, 1 - alpha], rtol=1e-5)
    np.testing.assert_allclose(combined.numpy(), 2 * (alpha * g1 + (1 - alpha) * g2), rtol=1e-5)


def test_mgda_min_norm_point_for_three_tasks():
    grads = tf.constant([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    _, w = weighting.get("mgda").build(3).combine(grads, tf.ones(3))
    np.testing.assert_allclose(w.numpy(), [0.5, 0.5, 0.0], atol=5e-3)


def test_cagrad_does_not_conflict_and_reduces_to_the_mean_when_tasks_agree():
    grads = tf.constant([[1.0, 0.0], [-0.8, 1.0]])
    d, _ = weighting.get("cagrad", c=0.5).build(2).combine(grads, tf.ones(2))
    assert (grads.numpy() @ d.numpy() > 0).all()
    same = tf.constant([[1.0, 2.0], [1.0, 2.0]])
    d, _ = weighting.get("cagrad", c=0.5).build(2).combine(same, tf.ones(2))
    # g0 = g, G^T w = g for any w: (g + c g) / (1 + c^2), times T = 2.
    np.testing.assert_allclose(d.numpy(), 2 * np.array([1.0, 2.0]) * 1.5 / 1.25, rtol=1e-4)


def test_uncertainty_log_variance_moves_towards_log_loss():
    strategy = weighting.get("uncertainty").build(2)
    losses = tf.constant([4.0, 0.25])
    with tf.GradientTape() as tape:
        total = strategy.total_loss(losses)
    grad = tape.gradient(total, strategy.log_variance).numpy()
    # d/ds (0.5 e^-s L + 0.5 s) = 0.5 (1 - e^-s L): negative (s rises) when L > e^s.
    np.testing.assert_allclose(grad, 0.5 * (1 - losses.numpy()), rtol=1e-6)
    for _ in range(300):
        with tf.GradientTape() as tape:
            total = strategy.total_loss(losses)
        g = tape.gradient(total, strategy.log_variance)
        strategy.log_variance.assign_sub(0.5 * g)
    np.testing.assert_allclose(strategy.log_variance.numpy(), np.log(losses.numpy()), atol=1e-3)


def test_dwa_weights_follow_the_loss_ratios():
    strategy = weighting.get("dwa", temperature=2.0).build(2)
    for epoch, losses in enumerate([[1.0, 1.0], [0.5, 0.9]]):
        assert strategy.loss_weights(None).numpy().tolist() == [1.0, 1.0]
        strategy.observe(tf.constant(losses))
        strategy.on_epoch_end(epoch)
    r = np.array([0.5, 0.9])
    expected = 2 * np.exp(r / 2) / np.exp(r / 2).sum()
    np.testing.assert_allclose(strategy.loss_weights(None).numpy(), expected, rtol=1e-6)


def test_gradnorm_raises_the_weight_of_the_task_with_the_smaller_gradient():
    strategy = weighting.get("gradnorm", alpha=0.0).build(2)
    grads = tf.constant([[10.0, 0.0], [0.0, 1.0]])
    for _ in range(20):
        strategy.combine(grads, tf.constant([1.0, 1.0]))
    w = strategy.weights.numpy()
    assert w[1] > w[0] and abs(w.sum() - 2.0) < 1e-5


def test_unknown_weighting_suggests_a_close_name():
    with pytest.raises(ValueError, match=r"weighting='uncertianty'.*Did you mean 'uncertainty'"):
        weighting.get("uncertianty")
    assert isinstance(weighting.get({"class_name": "lin", "config": {"epochs": 5}}),
                      weighting.schedules.Linear)


@pytest.mark.parametrize("name, kwargs, message", [
    ("fixed", {"weights": [1.0, -2.0]}, r"weights=\[1.0, -2.0\]"),
    ("fixed", {"weights": []}, r"weights=\[\]"),
    ("fixed", {"weights": [1.0, float("nan")]}, r"`weights` must be non-negative"),
    ("lin", {"epochs": 0}, r"`epochs` must be an integer >= 1. Received: epochs=0"),
    ("lin", {"epochs": 2.5}, r"epochs=2.5"),
    ("stairs_t1", {"t1": -1}, r"`t1` must be a number > 0. Received: t1=-1"),
    ("lin_t1", {"t1": "10"}, r"t1='10'"),
    ("exp_sigma", {"sigma": 0}, r"sigma=0"),
    ("exp_sigma", {"sigma": float("inf")}, r"sigma=inf"),
    ("exp_sigma", {"sigma": 40, "main": "0"}, r"main='0'"),
    ("dwa", {"temperature": 0}, r"temperature=0"),
    ("gradnorm", {"alpha": -0.5}, r"`alpha` must be a number >= 0. Received: alpha=-0.5"),
    ("gradnorm", {"learning_rate": 0}, r"learning_rate=0"),
    ("cagrad", {"c": -0.1}, r"c=-0.1"),
    ("cagrad", {"c": float("nan")}, r"c=nan"),
    ("mgda", {"normalize": "yes"}, r"normalize='yes'"),
    ("pcgrad", {"seed": -1}, r"seed=-1"),
    ("pcgrad", {"mode": "weights"}, r"mode='weights'"),
])
def test_strategy_parameters_out_of_range_are_named(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        weighting.get(name, **kwargs)
