"""The loss-level strategies of the zoo (GLS, RLW, the sum of log-losses, STCH, IMTL-L,
FAMO) against NumPy written here from their papers' equations: the weights each gives
(d total / d L_t) on three tasks, over several steps where a strategy has state."""

import numpy as np
import pytest
import tensorflow as tf

from mtl_tf import weighting

LOSSES = np.array([0.4, 1.3, 2.9])


def _numeric_weights(f, losses, h=1e-6):
    """d f / d L_t by central differences, in float64."""
    return np.array([(f(losses + h * e) - f(losses - h * e)) / (2 * h) for e in np.eye(len(losses))])


def _weights(strategy, losses):
    return strategy.loss_weights(tf.constant(losses, tf.float32)).numpy().astype(np.float64)


def _total_gradient(strategy, losses):
    """What the trainer's backward pass sees: d total_loss / d L."""
    losses = tf.constant(losses, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(losses)
        total = strategy.total_loss(losses)
    return tape.gradient(total, losses).numpy().astype(np.float64)


def test_gls_is_t_times_the_geometric_mean_of_the_losses():
    gls = weighting.get("gls").build(3)
    want = _numeric_weights(lambda loss: 3 * np.prod(loss) ** (1 / 3), LOSSES)
    np.testing.assert_allclose(_weights(gls, LOSSES), want, rtol=1e-5)
    np.testing.assert_allclose(_total_gradient(gls, LOSSES), want, rtol=1e-5)
    assert gls.total_loss(tf.constant(LOSSES, tf.float32)).numpy() == pytest.approx(
        3 * np.prod(LOSSES) ** (1 / 3), rel=1e-6)
    # Equal losses step like their sum.
    np.testing.assert_allclose(_weights(gls, np.full(3, 0.7)), np.ones(3), rtol=1e-6)


def test_gls_and_the_log_sum_leave_out_a_task_with_nothing_labelled():
    losses = np.array([0.4, 0.0, 2.9])
    gls = weighting.get("gls").build(3)
    want = _numeric_weights(lambda loss: 3 * np.prod(loss[[0, 2]]) ** (1 / 2), losses)
    want[1] = 0.0
    np.testing.assert_allclose(_total_gradient(gls, losses), want, rtol=1e-5)
    si = weighting.get("scale_invariant").build(3)
    np.testing.assert_allclose(_total_gradient(si, losses), [1 / 0.4, 0.0, 1 / 2.9], rtol=1e-6)
    assert np.isfinite(si.total_loss(tf.constant(losses, tf.float32)).numpy())


def test_the_scale_invariant_weights_are_the_inverse_losses():
    si = weighting.get("scale_invariant").build(3)
    np.testing.assert_allclose(_weights(si, LOSSES), 1 / LOSSES, rtol=1e-6)
    # Multiplying a task's loss by 10 divides its weight by 10: its gradient, 10 grad L,
    # enters unchanged.
    np.testing.assert_allclose(_weights(si, LOSSES * [1, 10, 1]) * [1, 10, 1], 1 / LOSSES, rtol=1e-6)


def test_rlw_draws_softmax_of_a_standard_normal_each_step():
    """log w_i - log w_j = z_i - z_j ~ N(0, 2) for softmax weights of z ~ N(0, I); the
    weights change every step, sum to T and repeat with the seed."""
    rlw = weighting.get("rlw", seed=4).build(3)
    draws = []
    for _ in range(3000):
        draws.append(_weights(rlw, LOSSES))
        rlw.observe(tf.constant(LOSSES, tf.float32))
    draws = np.array(draws)
    np.testing.assert_allclose(draws.sum(axis=1), 3.0, rtol=1e-5)
    differences = np.log(draws[:, 0]) - np.log(draws[:, 1])
    assert differences.mean() == pytest.approx(0.0, abs=0.1)
    assert differences.var() == pytest.approx(2.0, rel=0.1)
    assert len({tuple(np.round(d, 6)) for d in draws}) == len(draws)
    again = weighting.get("rlw", seed=4).build(3)
    np.testing.assert_array_equal(_weights(again, LOSSES), draws[0])
    other = weighting.get("rlw", seed=5).build(3)
    assert not np.allclose(_weights(other, LOSSES), draws[0])


def _stch_reference(epochs, mu, warmup):
    """The authors' STCH: sum of log-losses through epoch `warmup` (0-based), the mean
    losses of that epoch as the nadir, then T mu logsumexp(log(L / nadir) / mu)."""
    weights, collected = [], []
    nadir = None
    for epoch, batches in enumerate(epochs):
        for losses in batches:
            if epoch <= warmup:
                weights.append(1 / losses)
            else:
                y = np.log(losses / nadir) / mu
                soft = np.exp(y - y.max()) / np.exp(y - y.max()).sum()
                weights.append(len(losses) * soft / losses)
            if epoch == warmup:
                collected.append(losses)
        if epoch == warmup:
            nadir = np.mean(collected, axis=0)
    return np.array(weights)


def test_stch_follows_its_warm_up_nadir_and_smooth_maximum():
    rng = np.random.default_rng(0)
    epochs = [[rng.uniform(0.2, 3.0, size=3) for _ in range(4)] for _ in range(5)]
    stch = weighting.get("stch", mu=0.5, warmup_epochs=2).build(3)
    got = []
    for epoch, batches in enumerate(epochs):
        stch.on_epoch_begin(epoch)
        for losses in batches:
            got.append(_weights(stch, losses))
            np.testing.assert_allclose(_total_gradient(stch, losses), got[-1], rtol=1e-5)
            stch.observe(tf.constant(losses, tf.float32))
        stch.on_epoch_end(epoch)
    np.testing.assert_allclose(got, _stch_reference(epochs, 0.5, 2), rtol=1e-5)


def test_stch_warns_when_the_run_ends_before_it_starts():
    with pytest.warns(UserWarning, match=r"never starts"):
        weighting.get("stch").build(2).check_run_length(5)


def test_imtl_l_gradients_follow_its_loss():
    """sum_t e^{s_t} L_t - s_t: d/dL_t = e^{s_t}, d/ds_t = e^{s_t} L_t - 1."""
    imtl = weighting.get("imtl_l").build(3)
    imtl.log_scale.assign([0.3, -0.2, 0.0])
    losses = tf.constant(LOSSES, tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(losses)
        total = imtl.total_loss(losses)
    s = np.array([0.3, -0.2, 0.0])
    np.testing.assert_allclose(tape.gradient(total, losses), np.exp(s), rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(total, imtl.log_scale), np.exp(s) * LOSSES - 1, rtol=1e-6)
    assert imtl.trainable == [imtl.log_scale]


def _famo_reference(before, after, lr=0.025, gamma=0.01):
    """Liu et al. 2023 with the authors' Adam (PyTorch defaults, coupled weight decay):
    the step's weights (z / L) / sum(z / L) times T, then one Adam step on the logits
    with gradient J_softmax^T delta + gamma xi, delta = log L(before) - log L(after)."""
    xi, m, v = np.zeros(3), np.zeros(3), np.zeros(3)
    weights = []
    for k, (b, a) in enumerate(zip(before, after), start=1):
        z = np.exp(xi) / np.exp(xi).sum()
        share = z / (b + 1e-8)
        weights.append(3 * share / share.sum())
        delta = np.log(b + 1e-8) - np.log(a + 1e-8)
        jacobian = np.diag(z) - np.outer(z, z)
        grad = jacobian.T @ delta + gamma * xi
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad**2
        xi = xi - lr * (m / (1 - 0.9**k)) / (np.sqrt(v / (1 - 0.999**k)) + 1e-8)
    return np.array(weights), xi


def test_famo_weights_and_logits_follow_its_update_over_five_steps():
    rng = np.random.default_rng(2)
    before = rng.uniform(0.5, 2.0, size=(5, 3))
    after = before * rng.uniform(0.7, 1.0, size=(5, 3))  # task 2 falls least on average
    famo = weighting.get("famo").build(3)
    got = []
    for b, a in zip(before, after):
        got.append(_weights(famo, b))
        np.testing.assert_allclose(_total_gradient(famo, b), got[-1], rtol=1e-5)
        famo.after_step(tf.constant(b, tf.float32), tf.constant(a, tf.float32))
    want, xi = _famo_reference(before, after)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(famo.logits.numpy(), xi, rtol=1e-4, atol=1e-7)


def test_famo_gives_no_weight_to_a_task_with_nothing_labelled():
    famo = weighting.get("famo").build(3)
    w = _weights(famo, np.array([0.5, 0.0, 1.0]))
    np.testing.assert_allclose(w, [2.0, 0.0, 1.0], rtol=1e-6)  # 3 (1/0.5, 0, 1) / 3


@pytest.mark.parametrize("name, kwargs, message", [
    ("rlw", {"seed": -1}, r"seed=-1"),
    ("stch", {"mu": 0}, r"mu=0"),
    ("stch", {"warmup_epochs": 1.5}, r"warmup_epochs=1.5"),
    ("famo", {"learning_rate": 0}, r"learning_rate=0"),
    ("famo", {"gamma": -1.0}, r"gamma=-1.0"),
    ("gls", {"mu": 1}, r"mu"),
])
def test_bad_parameters_are_refused_by_name(name, kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        weighting.get(name, **kwargs)
