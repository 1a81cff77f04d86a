"""Every weighting strategy against a NumPy reference written here from its paper's
equations (never from the code under test), on T = 3 tasks where the order of tasks or a
closed form could hide a mistake."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from mtl_tf import weighting

RNG = np.random.default_rng(7)
# Three 6-dimensional task gradients, two of them in conflict with the third.
G = np.array([[1.0, 0.5, -0.3, 0.2, 0.0, 0.7],
              [-0.8, 0.4, 0.6, -0.1, 0.3, -0.5],
              [0.2, -0.9, 0.1, 0.5, -0.4, 0.3]])


def _combine(strategy, grads, losses=None, calls=1):
    strategy = strategy.build(len(grads))
    losses = np.ones(len(grads)) if losses is None else losses
    for _ in range(calls):
        combined, weights = strategy.combine(tf.constant(grads, tf.float32),
                                             tf.constant(losses, tf.float32))
    return np.asarray(combined, np.float64), np.asarray(weights, np.float64)


def _simplex(t, step):
    """Every point of the T-simplex on a grid of `step`."""
    n = int(round(1 / step))
    points = [c for c in itertools.product(range(n + 1), repeat=t - 1) if sum(c) <= n]
    return np.array([[*c, n - sum(c)] for c in points], np.float64) / n


# --- GradNorm ---------------------------------------------------------------------------
def _gradnorm_reference(grads_per_step, losses_per_step, alpha, lr):
    """Chen et al. 2018, eq. 2 with the target held constant: one L1 gradient step on the
    weights per call, then renormalised to sum T (weights floored at 1e-3)."""
    t = grads_per_step[0].shape[0]
    w, initial, combined = np.ones(t), None, []
    for grads, losses in zip(grads_per_step, losses_per_step):
        initial = losses if initial is None else initial
        norms = np.linalg.norm(grads, axis=1)
        combined.append(w @ grads)
        ratio = losses / initial
        target = np.mean(w * norms) * (ratio / ratio.mean()) ** alpha
        step = np.sign(w * norms - target) * norms
        w = np.maximum(w - lr * step, 1e-3)
        w = w * t / w.sum()
    return combined, w


def test_gradnorm_follows_its_equations_over_three_steps():
    grads = [G, 0.5 * G + 0.1, G * np.array([[2.0], [0.3], [1.0]])]
    losses = [np.array([2.0, 1.0, 3.0]), np.array([1.5, 0.9, 1.2]), np.array([1.0, 0.95, 0.6])]
    strategy = weighting.get("gradnorm", alpha=1.5, learning_rate=0.05).build(3)
    for step, (g, l) in enumerate(zip(grads, losses)):
        combined, used = strategy.combine(tf.constant(g, tf.float32), tf.constant(l, tf.float32))
        want_combined, want_weights = _gradnorm_reference(grads[:step + 1], losses[:step + 1], 1.5, 0.05)
        np.testing.assert_allclose(combined, want_combined[-1], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(strategy.weights.numpy(), want_weights, rtol=1e-5)
    # With alpha > 0 the slow task (the one whose loss fell least) gains weight.
    assert strategy.weights.numpy()[1] > 1.0


# --- DWA --------------------------------------------------------------------------------
def test_dwa_follows_its_equation_over_four_epochs_of_three_tasks():
    temperature = 2.0
    epochs = [RNG.uniform(0.2, 3.0, size=(steps, 3)) for steps in (4, 3, 5, 2)]
    strategy = weighting.get("dwa", temperature=temperature).build(3)
    means = []
    for epoch, losses in enumerate(epochs):
        if epoch < 2:
            want = np.ones(3)
        else:  # Liu et al. 2019, eq. 7: r = L(e-1) / L(e-2), epoch means of each task
            r = means[-1] / means[-2]
            want = 3 * np.exp(r / temperature) / np.exp(r / temperature).sum()
        np.testing.assert_allclose(strategy.loss_weights(None).numpy(), want, rtol=1e-5)
        for step_losses in losses:
            strategy.observe(tf.constant(step_losses, tf.float32))
        strategy.on_epoch_end(epoch)
        means.append(losses.mean(axis=0))


# --- PCGrad -----------------------------------------------------------------------------
def _pcgrad_reference(grads, order):
    out = []
    for i in range(len(grads)):
        g = grads[i].copy()
        for j in order[i]:
            if j != i and g @ grads[j] < 0:
                g = g - (g @ grads[j]) / (grads[j] @ grads[j]) * grads[j]
        out.append(g)
    return np.sum(out, axis=0)


def test_pcgrad_projects_three_tasks_in_its_documented_random_order():
    strategy = weighting.get("pcgrad", seed=5).build(3)
    seen = set()
    for call in range(1, 6):
        combined, _ = strategy.combine(tf.constant(G, tf.float32), tf.ones(3))
        keys = tf.random.stateless_uniform([3, 3], seed=tf.constant([5, call], tf.int64)).numpy()
        order = np.argsort(keys, axis=1)
        np.testing.assert_allclose(combined, _pcgrad_reference(G, order), rtol=1e-5, atol=1e-6)
        seen.add(tuple(np.round(combined, 5)))
    # The order matters for these gradients: the calls did not all give the same result.
    assert len(seen) > 1


# --- MGDA -------------------------------------------------------------------------------
@pytest.mark.parametrize("normalize", [False, True])
def test_mgda_finds_the_min_norm_point_of_three_gradients(normalize):
    grads = G * np.array([[3.0], [1.0], [0.5]])  # unequal norms: normalising changes the answer
    combined, w = _combine(weighting.get("mgda", normalize=normalize), grads)
    solved = grads / np.linalg.norm(grads, axis=1, keepdims=True) if normalize else grads
    grid = _simplex(3, 0.002)
    norms = np.linalg.norm(grid @ solved, axis=1)
    best = grid[np.argmin(norms)]
    np.testing.assert_allclose(w, best, atol=6e-3)
    assert np.linalg.norm(w @ solved) <= norms.min() + 1e-4
    # The weights found on the normalised gradients apply to the original ones (the authors').
    np.testing.assert_allclose(combined, 3 * w @ grads, rtol=1e-5, atol=1e-6)


# --- CAGrad -----------------------------------------------------------------------------
def test_cagrad_weights_minimise_its_dual_objective_with_the_default_c():
    grads = G * np.array([[2.0], [1.0], [0.6]])
    combined, w = _combine(weighting.get("cagrad"), grads)
    c = 0.5  # the paper's and LibMTL's default
    g0 = grads.mean(axis=0)
    root_phi = c * np.linalg.norm(g0)
    grid = _simplex(3, 0.002)
    objective = grid @ grads @ g0 + root_phi * np.linalg.norm(grid @ grads, axis=1)
    best = grid[np.argmin(objective)]
    np.testing.assert_allclose(w, best, atol=0.02)
    gw = w @ grads
    assert gw @ g0 + root_phi * np.linalg.norm(gw) <= objective.min() + 1e-4
    direction = (g0 + root_phi * gw / np.linalg.norm(gw)) / (1 + c**2)
    np.testing.assert_allclose(combined, 3 * direction, rtol=1e-4, atol=1e-6)


# --- Uncertainty ------------------------------------------------------------------------
def test_uncertainty_gradients_follow_kendall_et_al():
    strategy = weighting.get("uncertainty").build(3)
    s = np.array([0.3, -0.7, 1.2])
    strategy.log_variance.assign(s)
    losses = tf.constant([4.0, 0.25, 1.5])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(losses)
        total = strategy.total_loss(losses)
    l = losses.numpy()
    # sum_t 0.5 exp(-s_t) L_t + 0.5 s_t
    np.testing.assert_allclose(total.numpy(), np.sum(0.5 * np.exp(-s) * l + 0.5 * s), rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(total, strategy.log_variance), 0.5 * (1 - np.exp(-s) * l), rtol=1e-5)
    np.testing.assert_allclose(tape.gradient(total, losses), 0.5 * np.exp(-s), rtol=1e-6)
