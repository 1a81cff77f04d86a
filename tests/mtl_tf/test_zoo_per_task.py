"""The per-task-gradient strategies of the zoo (DB-MTL, MoCo, ExcessMTL, GradDrop, and
MoDo and SDMGrad on three samples)
against NumPy written here from their papers' (and authors' code's) equations, over
several steps of changing gradients, with their state."""

import numpy as np
import pytest
import tensorflow as tf

from mtl_tf import weighting

RNG = np.random.default_rng(3)
STEPS = [RNG.normal(size=(3, 7)) * np.array([[2.0], [1.0], [0.1]]) for _ in range(4)]
LOSSES = [RNG.uniform(0.3, 2.0, size=3) for _ in range(4)]


def _run(name, **kwargs):
    strategy = weighting.get(name, **kwargs).build(3)
    strategy.build_gradient_state(7)
    out = [strategy.combine(tf.constant(g, tf.float64), tf.constant(l, tf.float32))
           for g, l in zip(STEPS, LOSSES)]
    return strategy, [c.numpy() for c, _ in out], [w.numpy() for _, w in out]


def test_db_mtl_balances_log_loss_gradients_to_the_largest_norm():
    strategy, combined, weights = _run("db_mtl", beta=0.9, beta_sigma=0.5)
    average = np.zeros((3, 7))
    for k, (g, loss, got, w) in enumerate(zip(STEPS, LOSSES, combined, weights), start=1):
        log_grads = g / (loss[:, None] + 1e-8)
        rate = 0.9 / k**0.5
        average = rate * average + (1 - rate) * log_grads
        norms = np.linalg.norm(average, axis=1)
        want = (norms.max() / (norms + 1e-8)) @ average
        np.testing.assert_allclose(got, want, rtol=1e-5)
        np.testing.assert_allclose(w, 1 / (loss + 1e-8), rtol=1e-6)  # the heads' log-loss gradients
    np.testing.assert_allclose(strategy.average.numpy(), average, rtol=1e-5)


def _simplex_projection(v):
    """By bisection on theta: sum max(v - theta, 0) = 1."""
    low, high = v.min() - 1, v.max()
    for _ in range(200):
        theta = (low + high) / 2
        low, high = (theta, high) if np.maximum(v - theta, 0).sum() > 1 else (low, theta)
    return np.maximum(v - (low + high) / 2, 0)


def test_moco_tracks_the_gradients_and_projects_its_weights():
    strategy, combined, weights = _run("moco", beta=0.3, gamma=0.5, rho=0.1)
    tracked, lam = np.zeros((3, 7)), np.full(3, 1 / 3)
    for g, got, w in zip(STEPS, combined, weights):
        tracked = tracked - 0.3 * (tracked - g)
        lam = _simplex_projection(lam - 0.5 * (tracked @ tracked.T @ lam + 0.1 * lam))
        np.testing.assert_allclose(w, lam, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(got, 3 * lam @ tracked, rtol=1e-5, atol=1e-7)
    assert (lam == 0).any() or lam.min() < 0.2  # the projection moved the weights off uniform


def test_excess_mtl_weights_by_the_excess_risk_after_its_first_step():
    _, combined, weights = _run("excess_mtl", robust_step_size=0.5)
    squares, w, baseline = np.zeros((3, 7)), np.ones(3), None
    for g, got, got_w in zip(STEPS, combined, weights):
        squares += g**2
        risk = (g**2 / np.sqrt(squares + 1e-7)).sum(axis=1)
        if baseline is None:
            baseline = risk
        else:
            w = w * np.exp(0.5 * risk / baseline)
            w = 3 * w / w.sum()
        np.testing.assert_allclose(got_w, w, rtol=1e-5)
        np.testing.assert_allclose(got, w @ g, rtol=1e-5)
    assert not np.allclose(w, 1.0)


def test_excess_mtl_survives_a_first_risk_near_zero():
    """A flat start (the toy's log region) makes the first risk tiny and the next ratio
    about 1e12: exp overflows, and w exp(eta r) / sum would be inf / inf. The weights go
    to the task of the largest ratio instead, as the formula does in the limit."""
    strategy = weighting.get("excess_mtl").build(2)
    strategy.build_gradient_state(2)
    strategy.combine(tf.constant([[1e-9, 0.0], [1e-9, 0.0]]), tf.ones(2))
    combined, weights = strategy.combine(tf.constant([[3.0, 1.0], [0.1, 0.0]]), tf.ones(2))
    np.testing.assert_allclose(weights.numpy(), [2.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(combined.numpy(), [6.0, 2.0], rtol=1e-6)


def test_graddrop_keeps_each_coordinates_winning_sign():
    strategy = weighting.get("graddrop", seed=5).build(3)
    for n, g in enumerate(STEPS[:2], start=1):
        got, _ = strategy.combine(tf.constant(g, tf.float64), tf.ones(3))
        purity = 0.5 * (1 + g.sum(axis=0) / (np.abs(g).sum(axis=0) + 1e-7))
        u = tf.random.stateless_uniform([7], seed=[5, n], dtype=tf.float64).numpy()
        mask = ((purity > u) & (g > 0)) | ((purity < u) & (g < 0))
        np.testing.assert_allclose(got.numpy(), (mask * g).sum(axis=0), rtol=1e-12)
    # Gradients that agree in sign everywhere pass whole; leak 1 is the plain sum.
    agree = np.abs(STEPS[0])
    np.testing.assert_allclose(strategy.combine(tf.constant(agree), tf.ones(3))[0], agree.sum(0), rtol=1e-12)
    leaky = weighting.get("graddrop", leak=1.0).build(3)
    np.testing.assert_allclose(leaky.combine(tf.constant(STEPS[0]), tf.ones(3))[0], STEPS[0].sum(0), rtol=1e-12)


@pytest.mark.parametrize("name", ["db_mtl", "moco", "excess_mtl", "graddrop", "trimmed_mean"])
def test_a_zero_gradient_gives_a_finite_step(name):
    strategy = weighting.get(name).build(3)
    strategy.build_gradient_state(7)
    grads = np.r_[STEPS[0][:2], np.zeros((1, 7))]
    for _ in range(2):
        combined, weights = strategy.combine(tf.constant(grads), tf.constant([0.5, 1.0, 0.0]))
        assert np.isfinite(combined.numpy()).all() and np.isfinite(weights.numpy()).all()


@pytest.mark.parametrize("name", ["db_mtl", "moco", "excess_mtl", "graddrop", "trimmed_mean", "modo", "sdmgrad"])
def test_the_representation_mode_is_refused_by_name(name):
    with pytest.raises(ValueError, match=r"mode='representation'"):
        weighting.get(name, mode="representation")


def test_per_weight_state_needs_a_cut_and_gets_one_on_siamese_pipes():
    """Siamese pipes have no `trunk` but a graph cut (the pipes' logits): the shared
    weights are the pipes'. A layer whose weights serve two tasks' own paths leaves no
    cut, and the strategy is refused."""
    import keras

    import zoo
    from training import Trainer

    model = zoo.build("siamese", tasks={"compare": 2, "digit_a": 10, "digit_b": 10},
                      input_shape=(2, 14, 14), pipe="shallow")
    trainer = Trainer(model, weighting="db_mtl")
    pipe = model.get_layer("pipe")
    assert trainer.weighting.average.shape[1] == sum(int(np.prod(v.shape)) for v in pipe.trainable_variables)
    x = keras.Input((6,))
    twice = keras.layers.Dense(3)
    shared = keras.layers.Dense(4)(x)
    no_cut = keras.Model(x, {t: twice(keras.layers.Dense(4)(shared)) for t in "ab"})
    with pytest.raises(ValueError, match=r"'db_mtl' needs a model whose shared layers are cut off"):
        Trainer(no_cut, weighting="db_mtl")


def _three_parts(seed):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(3, 7)) * np.array([[2.0], [1.0], [0.1]]) for _ in range(3)]


def test_modo_steps_its_weights_on_two_samples_and_the_gradient_on_the_third():
    strategy = weighting.get("modo", gamma=0.3, rho=0.1).build(3)
    lam = np.full(3, 1 / 3)
    for seed in range(3):
        g1, g2, g3 = _three_parts(seed)
        got, w = strategy.combine_parts([tf.constant(g) for g in (g1, g2, g3)], tf.ones(3))
        lam = _simplex_projection(lam - 0.3 * (g1 @ g2.T @ lam + 0.1 * lam))
        np.testing.assert_allclose(w.numpy(), lam, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(got.numpy(), 3 * lam @ g3, rtol=1e-6, atol=1e-9)


def test_sdmgrad_runs_its_inner_projected_momentum_steps():
    strategy = weighting.get("sdmgrad", lamda=0.3, iterations=20).build(3)
    w = np.full(3, 1 / 3)
    for seed in range(3):
        zeta, xi1, xi2 = _three_parts(seed)
        got, got_w = strategy.combine_parts([tf.constant(g) for g in (zeta, xi1, xi2)], tf.ones(3))
        cross = xi1 @ xi2.T
        cross = cross / (np.mean(np.sqrt(np.maximum(np.diag(cross), 0))) ** 2 + 1e-8)
        velocity = np.zeros(3)
        for _ in range(20):
            velocity = 0.5 * velocity + cross @ w + 0.3 * cross.mean(axis=1)
            w = _simplex_projection(w - 10.0 * velocity)
        np.testing.assert_allclose(got_w.numpy(), w, rtol=1e-6, atol=1e-9)
        want = 3 * (w @ zeta + 0.3 * zeta.mean(axis=0)) / 1.3
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-9)
