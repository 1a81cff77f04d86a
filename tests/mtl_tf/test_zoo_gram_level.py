"""The Gram-matrix strategies of the zoo (IMTL-G, IMTL, Aligned-MTL, UPGrad, DualProj,
Nash-MTL, FairGrad, ConFIG, GradVac) against NumPy written here from their papers'
equations, on the gradients themselves (never their Gram matrix): T = 2 and 3 with
conflicting gradients, the property each paper states, a zero gradient, duplicated
tasks, and the order of the tasks."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from mtl_tf import weighting

RNG = np.random.default_rng(11)
TWO = np.array([[1.0, 0.3, -0.2, 0.5], [-0.7, 0.6, 0.4, -0.2]])  # conflicting: dot < 0
THREE = np.array([[1.0, 0.5, -0.3, 0.2, 0.0, 0.7],
                  [-0.8, 0.4, 0.6, -0.1, 0.3, -0.5],
                  [0.2, -0.9, 0.1, 0.5, -0.4, 0.3]]) * np.array([[3.0], [1.0], [0.2]])
CASES = {"T=2": TWO, "T=3": THREE}
ORDER_FREE = ["imtl_g", "aligned_mtl", "upgrad", "dualproj", "nash_mtl", "fairgrad", "config",
              "mgda", "cagrad", "cr_mogm"]


def _combine(name, grads, losses=None, **kwargs):
    strategy = weighting.get(name, **kwargs).build(len(grads))
    losses = np.ones(len(grads)) if losses is None else losses
    combined, weights = strategy.combine(tf.constant(grads, tf.float64), tf.constant(losses, tf.float64))
    return combined.numpy(), weights.numpy()


def _units(grads):
    return grads / np.linalg.norm(grads, axis=1, keepdims=True)


# --- IMTL-G -----------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES)
def test_imtl_g_projects_equally_on_every_unit_gradient(case):
    """The paper's closed form: alpha_{2:T} = g_1 U^T (D U^T)^-1, D_t = g_1 - g_t,
    U_t = u_1 - u_t, alpha_1 = 1 - sum; d = sum alpha_t g_t (times T here)."""
    grads = CASES[case]
    units = _units(grads)
    d_rows, u_rows = grads[0] - grads[1:], units[0] - units[1:]
    rest = grads[0] @ u_rows.T @ np.linalg.inv(d_rows @ u_rows.T)
    alpha = np.r_[1 - rest.sum(), rest]
    d, weights = _combine("imtl_g", grads)
    t = len(grads)
    np.testing.assert_allclose(weights, alpha, rtol=1e-9)
    np.testing.assert_allclose(d, t * alpha @ grads, rtol=1e-9)
    projections = units @ d
    np.testing.assert_allclose(projections, projections[0], rtol=1e-9)


def test_imtl_g_with_duplicated_tasks_still_projects_equally():
    grads = THREE[[0, 1, 1, 2]]
    d, weights = _combine("imtl_g", grads)
    assert np.isfinite(d).all() and weights.sum() == pytest.approx(1.0)
    projections = _units(grads) @ d
    np.testing.assert_allclose(projections, projections[0], rtol=1e-8)


def test_imtl_scales_the_gradients_by_its_learned_loss_scales():
    """IMTL-G on the scaled tasks' gradients e^{s_t} g_t; the heads weighted e^{s_t}."""
    strategy = weighting.get("imtl").build(3)
    s = np.array([0.5, -0.3, 0.1])
    strategy.log_scale.assign(s)
    combined, weights = strategy.combine(tf.constant(THREE, tf.float64), tf.ones(3, tf.float64))
    scaled = np.exp(s)[:, None] * THREE
    want, _ = _combine("imtl_g", scaled)
    np.testing.assert_allclose(combined.numpy(), want, rtol=1e-6)
    np.testing.assert_allclose(weights.numpy(), np.exp(s), rtol=1e-6)
    losses = tf.constant([0.5, 1.0, 2.0], tf.float64)
    with tf.GradientTape() as tape:
        total = strategy.total_loss(losses)
    np.testing.assert_allclose(tape.gradient(total, strategy.log_scale).numpy(),
                               np.exp(s) * [0.5, 1.0, 2.0] - 1, rtol=1e-6)


# --- Aligned-MTL ------------------------------------------------------------------------
@pytest.mark.parametrize("scale", ["min", "median", "rmse"])
@pytest.mark.parametrize("case", CASES)
def test_aligned_mtl_aligns_the_gradients_to_condition_number_one(case, scale):
    """From the SVD of the gradient matrix J = U S V^T (not its Gram matrix): the aligned
    gradients sigma V U^T... i.e. B = sigma U S^-1 U^T, J^T B has orthogonal columns of
    norm sigma, and the update is J^T B 1."""
    grads = CASES[case]
    u, singular, _ = np.linalg.svd(grads, full_matrices=False)
    sigma = {"min": singular.min(), "median": np.sort(singular)[(len(singular) - 1) // 2],
             "rmse": np.sqrt(np.mean(singular**2))}[scale]
    b = sigma * u @ np.diag(1 / singular) @ u.T
    aligned = grads.T @ b
    np.testing.assert_allclose(aligned.T @ aligned, sigma**2 * np.eye(len(grads)), atol=1e-9)
    d, _ = _combine("aligned_mtl", grads, scale=scale)
    np.testing.assert_allclose(d, aligned.sum(axis=1), rtol=1e-8)


def test_aligned_mtl_drops_the_null_directions_of_duplicated_tasks():
    grads = TWO[[0, 0, 1]]
    d, _ = _combine("aligned_mtl", grads)
    assert np.isfinite(d).all()
    # Rank 2: B = sigma U_2 S_2^-1 U_2^T on the two kept directions.
    u, singular, _ = np.linalg.svd(grads, full_matrices=False)
    u, singular = u[:, :2], singular[:2]
    want = grads.T @ (singular.min() * u @ np.diag(1 / singular) @ u.T) @ np.ones(3)
    np.testing.assert_allclose(d, want, rtol=1e-7)


# --- UPGrad and DualProj ----------------------------------------------------------------
def _dual_cone_projection(grads, x):
    """argmin ||y - x|| s.t. J y >= 0, through its dual min_{v >= u} v^T G v (x = J^T u) by
    brute force over active sets: returns the weights v."""
    gram = grads @ grads.T
    q_matrix = gram / np.trace(gram)
    u = np.linalg.lstsq(grads.T, x, rcond=None)[0]  # x = J^T u
    q = gram / np.trace(gram) @ u
    t = len(gram)
    for k in range(t + 1):
        for free in map(list, itertools.combinations(range(t), k)):
            z = np.zeros(t)
            if free:
                z[free] = np.linalg.solve(q_matrix[np.ix_(free, free)], -q[free])
            if (z >= -1e-12).all() and (q_matrix @ z + q >= -1e-12).all():
                return u + z
    raise AssertionError("no KKT point")


@pytest.mark.parametrize("case", CASES)
def test_upgrad_sums_each_gradients_projection_onto_the_dual_cone(case):
    grads = CASES[case]
    t = len(grads)
    want = sum(_dual_cone_projection(grads, grads[i] / t) for i in range(t)) @ grads * t
    d, _ = _combine("upgrad", grads)
    np.testing.assert_allclose(d, want, rtol=1e-9, atol=1e-12)
    # The paper's property: it conflicts with no task (TorchJD's 1e-4 ridge breaks it here).
    assert (grads @ d >= -1e-9 * np.linalg.norm(grads, axis=1) * np.linalg.norm(d)).all()


@pytest.mark.parametrize("case", CASES)
def test_dualproj_projects_the_mean_gradient_onto_the_dual_cone(case):
    grads = CASES[case]
    t = len(grads)
    want = _dual_cone_projection(grads, grads.mean(axis=0)) @ grads * t
    d, _ = _combine("dualproj", grads)
    np.testing.assert_allclose(d, want, rtol=1e-9, atol=1e-12)
    assert (grads @ d >= -1e-9 * np.linalg.norm(grads, axis=1) * np.linalg.norm(d)).all()


@pytest.mark.parametrize("name", ["upgrad", "dualproj"])
def test_gradients_that_do_not_conflict_are_summed(name):
    grads = np.abs(THREE)  # every dot product is positive
    d, _ = _combine(name, grads)
    np.testing.assert_allclose(d, grads.sum(axis=0), rtol=1e-9)


def test_upgrad_at_many_tasks_equals_the_brute_force_projections():
    grads = RNG.normal(size=(10, 20)) * 10 ** RNG.uniform(-2, 2, size=(10, 1))
    t = len(grads)
    d, _ = _combine("upgrad", grads)
    want = sum(_dual_cone_projection(grads, grads[i] / t) for i in range(t)) @ grads * t
    np.testing.assert_allclose(d, want, rtol=1e-7, atol=1e-9 * np.abs(want).max())


# --- Nash-MTL and FairGrad --------------------------------------------------------------
def _solve_fair(grads, power):
    """G w = w^-p by fixed-point-free Newton on the gradients, written from the papers."""
    gram = grads @ grads.T
    w = np.ones(len(grads))
    for _ in range(200):
        f = gram @ w - w ** (-power)
        jac = gram + power * np.diag(w ** (-power - 1))
        step = np.linalg.solve(jac, -f)
        s = 1.0
        while (w + s * step <= 0).any():
            s /= 2
        w = w + s * step
    return w


@pytest.mark.parametrize("case", CASES)
def test_nash_mtl_solves_the_bargaining_equation(case):
    """g_t . d = 1 / alpha_t for every task, ||d||^2 = T; d unchanged when one task's
    gradient is scaled by 100 (before the norm clip, off here)."""
    grads = CASES[case]
    d, alpha = _combine("nash_mtl", grads, max_norm=None)
    np.testing.assert_allclose(grads @ d, 1 / alpha, rtol=1e-9)
    np.testing.assert_allclose(alpha, _solve_fair(grads, 1.0), rtol=1e-9)
    assert d @ d == pytest.approx(len(grads), rel=1e-9)
    scaled = grads * np.r_[100.0, np.ones(len(grads) - 1)][:, None]
    np.testing.assert_allclose(_combine("nash_mtl", scaled, max_norm=None)[0], d, rtol=1e-8)
    clipped, _ = _combine("nash_mtl", grads)  # max_norm 1.0, the authors'
    np.testing.assert_allclose(clipped, d / np.sqrt(len(grads)), rtol=1e-9)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("case", CASES)
def test_fairgrad_solves_the_alpha_fair_equation(case, alpha):
    grads = CASES[case]
    d, w = _combine("fairgrad", grads, alpha=alpha, max_norm=None)
    np.testing.assert_allclose(grads @ d, w ** (-1 / alpha), rtol=1e-9)
    np.testing.assert_allclose(w, _solve_fair(grads, 1 / alpha), rtol=1e-9)
    if alpha == 1.0:
        np.testing.assert_allclose(d, _combine("nash_mtl", grads, max_norm=None)[0], rtol=1e-9)


@pytest.mark.parametrize("alpha", [1.0, 0.5, 2.0])
def test_fair_weights_at_exactly_opposite_gradients(alpha):
    """Pareto-stationary gradients (g2 = -0.3 g1, the toy's front) have no solution but the
    ridge's: the weights are large, positive and balance the two (w1 |g1| = w2 |g2| to
    rounding, so d ~ 0), and the solver stops where float64 stops improving them."""
    from mtl_tf.weighting.fair_allocation import fair_weights

    g1 = np.array([1.0, 0.5, -0.2])
    grads = np.stack([g1, -0.3 * g1])
    w = fair_weights(tf.constant(grads @ grads.T), 1 / alpha).numpy()
    assert np.all(np.isfinite(w)) and np.all(w > 1e3)
    np.testing.assert_allclose(w[0] * 1.0, w[1] * 0.3, rtol=1e-3)


@pytest.mark.parametrize("name", ["nash_mtl", "fairgrad"])
def test_a_zero_gradient_gets_no_weight_and_the_others_their_equation(name):
    grads = np.r_[THREE, np.zeros((1, 6))]
    d, w = _combine(name, grads, max_norm=None)
    assert w[3] == 0.0
    np.testing.assert_allclose(w[:3], _combine(name, THREE, max_norm=None)[1], rtol=1e-7)


# --- ConFIG -----------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES)
def test_config_has_the_same_cosine_to_every_gradient(case):
    """u = pinv(U) 1 on the unit gradients, length sum_t g_t . u / ||u||."""
    grads = CASES[case]
    u = np.linalg.pinv(_units(grads)) @ np.ones(len(grads))
    unit = u / np.linalg.norm(u)
    want = (grads @ unit).sum() * unit
    d, _ = _combine("config", grads)
    np.testing.assert_allclose(d, want, rtol=1e-9)
    cosines = _units(grads) @ d / np.linalg.norm(d)
    np.testing.assert_allclose(cosines, cosines[0], rtol=1e-9)
    assert cosines[0] > 0


def test_config_on_more_tasks_than_dimensions_and_a_zero_gradient():
    grads = np.r_[RNG.normal(size=(5, 3)), np.zeros((1, 3))]
    units = np.r_[_units(grads[:5]), np.zeros((1, 3))]  # the authors' unit vector of 0 is 0
    u = np.linalg.pinv(units) @ np.ones(6)
    unit = u / np.linalg.norm(u)
    d, _ = _combine("config", grads)
    np.testing.assert_allclose(d, (grads @ unit).sum() * unit, rtol=1e-8)


# --- GradVac ----------------------------------------------------------------------------
def _gradvac_reference(grads_per_step, beta, seed):
    """Wang et al. 2021 on the gradient vectors, PCGrad's documented order, targets
    updated after every comparison; returns the sum of the corrected gradients."""
    t = grads_per_step[0].shape[0]
    targets = np.zeros((t, t))
    results = []
    for n, grads in enumerate(grads_per_step, start=1):
        keys = tf.random.stateless_uniform([t, t], seed=[seed, n]).numpy()
        corrected = []
        new_targets = targets.copy()
        for i in range(t):
            gi = grads[i].copy()
            for j in np.argsort(keys[i], kind="stable"):
                if j == i:
                    continue
                gj = grads[j]
                phi = gi @ gj / (np.linalg.norm(gi) * np.linalg.norm(gj) + 1e-8)
                target = targets[i, j]
                if phi < target:
                    gi = gi + gj * np.linalg.norm(gi) * (
                        target * np.sqrt(1 - phi**2) - phi * np.sqrt(1 - target**2)) / (
                        np.linalg.norm(gj) * np.sqrt(1 - target**2) + 1e-8)
                new_targets[i, j] = (1 - beta) * target + beta * phi
            corrected.append(gi)
        targets = new_targets
        results.append(np.sum(corrected, axis=0))
    return np.array(results), targets


def test_gradvac_follows_its_targets_over_three_steps():
    steps = [THREE + 0.3 * RNG.normal(size=THREE.shape) for _ in range(3)]
    strategy = weighting.get("gradvac", beta=0.5, seed=2).build(3)
    got = [strategy.combine(tf.constant(g, tf.float64), tf.ones(3, tf.float64))[0].numpy() for g in steps]
    want, targets = _gradvac_reference(steps, 0.5, 2)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(strategy.targets.numpy(), targets, rtol=1e-5, atol=1e-6)
    assert (targets != 0).any()


# --- Properties of all of them ----------------------------------------------------------
@pytest.mark.parametrize("name", ORDER_FREE)
def test_order_free_strategies_do_not_depend_on_the_order_of_the_tasks(name):
    permutation = [2, 0, 1]
    d, w = _combine(name, THREE)
    d_perm, w_perm = _combine(name, THREE[permutation])
    np.testing.assert_allclose(d_perm, d, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(w_perm, w[permutation], rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("name", ORDER_FREE + ["gradvac", "pcgrad", "imtl", "pcd", "krum"])
def test_a_zero_gradient_or_identical_tasks_give_a_finite_step(name):
    zero = np.r_[THREE, np.zeros((1, 6))]
    d, w = _combine(name, zero)
    assert np.isfinite(d).all() and np.isfinite(w).all()
    same = np.repeat(THREE[:1], 3, axis=0)
    d, _ = _combine(name, same)
    assert np.isfinite(d).all()
    # Identical tasks agree: every method steps along their gradient.
    assert d @ THREE[0] > 0.99 * np.linalg.norm(d) * np.linalg.norm(THREE[0])


@pytest.mark.parametrize("name, kwargs, message", [
    ("aligned_mtl", {"scale": "max"}, r"scale='max'"),
    ("nash_mtl", {"max_norm": 0}, r"max_norm=0"),
    ("fairgrad", {"alpha": 0}, r"alpha=0"),
    ("gradvac", {"beta": 1.5}, r"beta=1.5"),
    ("upgrad", {"mode": "layers"}, r"mode='layers'"),
])
def test_bad_parameters_are_refused_by_name(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        weighting.get(name, **kwargs)
