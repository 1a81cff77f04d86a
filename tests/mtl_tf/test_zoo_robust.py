"""TorchJD's robust and hierarchical aggregators (Krum, TrimmedMean, CR-MOGM, PCD) against
NumPy written here from their papers: Krum's scores from the gradients' distances, the
trimmed mean by sorting, CR-MOGM's moving average of two-task MGDA's closed form, PCD's
program solved by enumerating every working set of its KKT conditions."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from mtl_tf import weighting

RNG = np.random.default_rng(5)


def _combine(strategy, grads, losses=None):
    losses = np.ones(len(grads)) if losses is None else losses
    combined, weights = strategy.combine(tf.constant(grads, tf.float64), tf.constant(losses, tf.float64))
    return combined.numpy(), weights.numpy()


# --- Krum ---------------------------------------------------------------------------------
def _krum(grads, f, k):
    t = len(grads)
    distances = ((grads[:, None] - grads[None]) ** 2).sum(-1)
    scores = [np.sort(np.delete(distances[i], i))[:t - f - 2].sum() for i in range(t)]
    chosen = np.argsort(scores, kind="stable")[:k]
    return t * grads[chosen].mean(0), chosen


@pytest.mark.parametrize("f, k", [(0, 1), (1, 1), (1, 3), (2, 2)])
def test_krum_takes_the_mean_of_the_gradients_of_lowest_score(f, k):
    grads = RNG.normal(size=(7, 5)) * RNG.uniform(0.1, 3, size=(7, 1))
    grads[3] = [40.0, -60.0, 10.0, 5.0, 80.0]  # an outlier
    want, chosen = _krum(grads, f, k)
    d, w = _combine(weighting.get("krum", n_byzantine=f, n_selected=k).build(7), grads)
    np.testing.assert_allclose(d, want, rtol=1e-9)
    np.testing.assert_allclose(np.flatnonzero(w), np.sort(chosen))
    assert 3 not in chosen
    # Without equal scores, the order of the tasks does not matter (equal ones go to the
    # lower index: with T = 3 and f = 0 the two nearest gradients always tie).
    permutation = RNG.permutation(7)
    d_perm, w_perm = _combine(weighting.get("krum", n_byzantine=f, n_selected=k).build(7), grads[permutation])
    np.testing.assert_allclose(d_perm, d, rtol=1e-9)
    np.testing.assert_array_equal(w_perm, w[permutation])


def test_krum_keeps_torchjds_selection_where_the_outlier_is_far():
    """TorchJD's test matrix (it sums distances, not their squares; both drop row 2)."""
    grads = np.array([[1, 1, 1], [1, 0, 1], [75, -666, 23], [1, 2, 3], [2, 0, 1]], float)
    d, w = _combine(weighting.get("krum", n_byzantine=1, n_selected=4).build(5), grads)
    np.testing.assert_allclose(w, [0.25, 0.25, 0, 0.25, 0.25])
    np.testing.assert_allclose(d, 5 * np.array([1.25, 0.75, 1.5]), rtol=1e-12)


def test_krum_with_duplicated_tasks_selects_one_of_them():
    grads = RNG.normal(size=(3, 4))
    grads = grads[[0, 1, 1, 2, 1]]
    d, w = _combine(weighting.get("krum").build(5), grads)
    np.testing.assert_allclose(d, 5 * grads[1], rtol=1e-12)
    assert w[1] == 1.0  # the first of the equal scores


# --- TrimmedMean --------------------------------------------------------------------------
@pytest.mark.parametrize("trim", [0, 1, 2])
def test_the_trimmed_mean_drops_each_coordinates_extremes(trim):
    grads = RNG.normal(size=(5, 9)) * RNG.uniform(0.01, 100, size=(5, 1))
    want = 5 * np.array([np.sort(grads[:, j])[trim:5 - trim].mean() for j in range(9)])
    d, _ = _combine(weighting.get("trimmed_mean", trim_number=trim).build(5), grads)
    np.testing.assert_allclose(d, want, rtol=1e-12)


def test_the_trimmed_mean_on_torchjds_matrix():
    grads = np.array([[1e11, 3], [1, -1e11], [-1e10, 1e10], [2, 2]])
    d, _ = _combine(weighting.get("trimmed_mean").build(4), grads)
    np.testing.assert_allclose(d, 4 * np.array([1.5, 2.5]))


# --- CR-MOGM ------------------------------------------------------------------------------
def _mgda_two(g):
    """Two tasks' min-norm point, closed form (Sener and Koltun's Alg. 1)."""
    g1, g2 = g
    w1 = np.clip((g2 - g1) @ g2 / ((g1 - g2) @ (g1 - g2)), 0, 1)
    return np.array([w1, 1 - w1])


def test_cr_mogm_averages_mgdas_weights_over_steps():
    alpha = 0.7
    strategy = weighting.get("cr_mogm", alpha=alpha).build(2)
    average = None
    for _ in range(4):
        grads = RNG.normal(size=(2, 6)) + [[1.0] * 6, [0.0] * 6]
        w = 2 * _mgda_two(grads)
        average = w if average is None else alpha * average + (1 - alpha) * w
        d, _ = _combine(strategy, grads)
        np.testing.assert_allclose(d, average @ grads, rtol=1e-6)


def test_cr_mogm_keeps_its_bases_state_and_config():
    strategy = weighting.get("cr_mogm", base={"class_name": "pcgrad", "config": {"seed": 4}}, alpha=0.5,
                             mode="parameters")
    assert strategy.base.seed == 4 and strategy.base.grad_mode == "parameters"
    again = weighting.get({"class_name": "cr_mogm", "config": strategy.get_config()})
    assert again.get_config() == strategy.get_config()
    strategy.build(3)
    _combine(strategy, RNG.normal(size=(3, 4)))
    names = {v.name.split(":")[0] for v in strategy.variables}
    assert {"average", "step"} <= names  # the average and PCGrad's own step, checkpointed


@pytest.mark.parametrize("base", ["db_mtl", "imtl", "equal", "cr_mogm", "nowhere"])
def test_cr_mogm_refuses_a_base_that_is_not_a_gram_strategy(base):
    with pytest.raises(ValueError, match=rf"base='{base}'"):
        weighting.get("cr_mogm", base=base)


# --- PCD ----------------------------------------------------------------------------------
def _pcd_program(gn, tau):
    """Def. 4.1 on the normalised gradients gn (primary first), by its KKT conditions:
    d = g_1 + sum_A mu_j g_j over every working set A, kept when mu >= 0 and every
    constraint holds; the smallest ||d - g_1||. None when no direction is feasible."""
    t = len(gn)
    taus = np.broadcast_to(tau, (t - 1,))
    best = None
    for size in range(t):
        for subset in itertools.combinations(range(1, t), size):
            a = list(subset)
            mu = np.zeros(t - 1)
            if a:
                rows = gn[a]
                gram = rows @ rows.T
                if np.linalg.matrix_rank(gram, tol=1e-10 * np.trace(gram)) < len(a):
                    continue
                mu[np.array(a) - 1] = np.linalg.solve(gram, taus[np.array(a) - 1] * np.diag(gram) - rows @ gn[0])
            d = gn[0] + mu @ gn[1:]
            feasible = all(gn[j] @ d >= taus[j - 1] * gn[j] @ gn[j] - 1e-9 for j in range(1, t))
            if (mu >= -1e-12).all() and feasible:
                if best is None or np.linalg.norm(d - gn[0]) < np.linalg.norm(best - gn[0]) - 1e-12:
                    best = d
    return best


def _pcd(steps, tau=0.02, beta=0.999, eps=1e-8):
    """Algorithm 1 over several steps: the moving average of the squared norms, the
    program on the normalised gradients, d rescaled to ||g_1||."""
    v = np.zeros(len(steps[0]))
    out = []
    for n, g in enumerate(steps, start=1):
        v = beta * v + (1 - beta) * (g ** 2).sum(1)
        s = 1 / np.sqrt(v / (1 - beta ** n) + eps)
        gn = s[:, None] * g
        d = _pcd_program(gn, tau)
        d = g[0] if d is None else d  # Algorithm 1: infeasible constraints are dropped
        out.append(d * np.linalg.norm(g[0]) / np.linalg.norm(d) if np.linalg.norm(d) > 0 else 0 * d)
    return out


def _pcd_run(steps, **kwargs):
    strategy = weighting.get("pcd", **kwargs).build(len(steps[0]))
    return [_combine(strategy, g)[0] for g in steps]


@pytest.mark.parametrize("t", [2, 3, 5, 8])
def test_pcd_solves_its_program_over_several_steps(t):
    """Secondaries that conflict with the primary (most constraints bind), norms over
    three orders of magnitude."""
    scales = np.logspace(0, -3, t)[:, None]
    steps = []
    for _ in range(3):
        g = RNG.normal(size=(t, 10))
        g[1:] -= 0.8 * g[0]
        steps.append(g * scales)
    for got, want in zip(_pcd_run(steps, tau=0.1), _pcd(steps, tau=0.1)):
        np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-12)


def test_pcd_meets_every_secondary_constraint_and_keeps_the_primarys_norm():
    g = np.array([[1.0, 0.0, 0.0], [-0.9, 0.4, 0.0], [-0.5, -0.8, 0.3]]) * [[1.0], [50.0], [0.01]]
    strategy = weighting.get("pcd", tau=0.2, eps=0.0).build(3)
    d, _ = _combine(strategy, g)
    assert np.linalg.norm(d) == pytest.approx(1.0)
    units = g / np.linalg.norm(g, axis=1, keepdims=True)
    direction = d / np.linalg.norm(d)
    # After rescaling, each constraint holds up to the positive factor ||g_1|| / ||d~||.
    assert (units[1:] @ direction > 0).all()
    np.testing.assert_allclose(d, _pcd([g], tau=0.2, eps=0.0)[0], rtol=1e-8)


def test_pcd_on_two_tasks_is_the_closed_form():
    """Cor. 4.6: mu = max(0, (tau ||g~_2||^2 - g~_1 . g~_2) / ||g~_2||^2)."""
    g = np.array([[1.0, 0.2], [-0.8, 0.5]]) * [[3.0], [0.1]]
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)  # first step, eps = 0
    mu = max(0.0, (0.3 - gn[0] @ gn[1]) / (gn[1] @ gn[1]))
    d = gn[0] + mu * gn[1]
    got = _pcd_run([g], tau=0.3, eps=0.0)[0]
    np.testing.assert_allclose(got, d * np.linalg.norm(g[0]) / np.linalg.norm(d), rtol=1e-9)


def test_pcd_edge_cases():
    g = RNG.normal(size=(3, 4))
    # Opposite secondaries: no direction gives both progress, the step is g_1.
    opposite = np.array([g[0], g[1], -g[1]])
    np.testing.assert_allclose(_pcd_run([opposite], tau=0.1)[0], g[0], rtol=1e-9)
    # A zero primary stops; a zero secondary constrains nothing.
    np.testing.assert_array_equal(_pcd_run([np.r_[np.zeros((1, 4)), g[1:]]])[0], 0)
    with_zero = np.r_[g[:2], np.zeros((1, 4))]
    np.testing.assert_allclose(_pcd_run([with_zero])[0], _pcd_run([g[:2]])[0], rtol=1e-9)
    # The primary may be any task; at the first step with eps = 0 scaling a task changes nothing.
    np.testing.assert_allclose(_pcd_run([g[[2, 0, 1]]], primary=1)[0], _pcd_run([g])[0], rtol=1e-9)
    np.testing.assert_allclose(_pcd_run([g * [[1.0], [30.0], [0.02]]], eps=0.0)[0],
                               _pcd_run([g], eps=0.0)[0], rtol=1e-8)


# --- Bad parameters -------------------------------------------------------------------------
@pytest.mark.parametrize("name, kwargs, num_tasks, message", [
    ("krum", {"n_byzantine": -1}, 5, r"n_byzantine=-1"),
    ("krum", {"n_byzantine": 1}, 3, r"n_byzantine \+ 3 = 4 tasks.*n_byzantine=1"),
    ("krum", {"n_selected": 4}, 3, r"n_selected=4"),
    ("trimmed_mean", {"trim_number": 1}, 2, r"2 \* trim_number \+ 1 = 3 tasks.*trim_number=1"),
    ("trimmed_mean", {"mode": "representation"}, 3, r"mode='representation'"),
    ("cr_mogm", {"alpha": 1.5}, 2, r"alpha=1.5"),
    ("pcd", {"tau": 2}, 3, r"tau=2"),
    ("pcd", {"tau": [0.1]}, 3, r"tau=\[0.1\]"),
    ("pcd", {"beta": 1.0}, 3, r"beta=1.0"),
    ("pcd", {"eps": -1}, 3, r"eps=-1"),
    ("pcd", {"primary": 3}, 3, r"primary=3"),
])
def test_bad_parameters_are_refused_by_name(name, kwargs, num_tasks, message):
    with pytest.raises(ValueError, match=message):
        weighting.get(name, **kwargs).build(num_tasks)
