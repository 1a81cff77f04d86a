"""MGDA's min-norm point (Wolfe's algorithm) against an exhaustive solution over supports,
where Frank-Wolfe with a fixed step count was 1-17% off: many tasks, nearly opposite
gradients, norms orders of magnitude apart, a zero gradient, duplicated tasks."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from mtl_tf import weighting
from mtl_tf.weighting.min_norm import min_norm_weights


def _exhaustive(gram):
    """The min-norm point by brute force: on each support, the affine minimum (its KKT
    system); the least norm among those with no negative weight."""
    t = len(gram)
    best, best_w = np.inf, None
    for k in range(1, t + 1):
        for support in map(list, itertools.combinations(range(t), k)):
            system = np.ones((k + 1, k + 1))
            system[:k, :k], system[k, k] = gram[np.ix_(support, support)], 0.0
            v = np.linalg.lstsq(system, np.r_[np.zeros(k), 1.0], rcond=None)[0][:k]
            if (v >= -1e-12).all():
                w = np.zeros(t)
                w[support] = v
                if w @ gram @ w < best:
                    best, best_w = w @ gram @ w, w
    return best, best_w


def _solve(grads, dtype=tf.float64):
    gram = grads @ grads.T
    return gram, min_norm_weights(tf.constant(gram, dtype)).numpy().astype(np.float64)


def _cases():
    rng = np.random.default_rng(0)
    yield "random T=5", rng.normal(size=(5, 8))
    yield "random T=9", rng.normal(size=(9, 8))  # more tasks than dimensions
    yield "nearly opposite", np.array([[1.0, 0.01, 0.0], [-1.0, 0.02, 0.0], [0.0, -1.0, 1e-3]])
    yield "norms 282, 3.8, 0.02", np.diag([282.0, 3.8, 0.02]) @ rng.normal(size=(3, 8))
    yield "a zero gradient", np.r_[rng.normal(size=(3, 8)), np.zeros((1, 8))]
    yield "duplicated tasks", rng.normal(size=(3, 8))[[0, 0, 1, 2, 2, 2]]
    yield "scales 1e-2 to 1e3", rng.normal(size=(7, 8)) * np.logspace(-2, 3, 7)[:, None]


@pytest.mark.parametrize("name, grads", list(_cases()), ids=[n for n, _ in _cases()])
def test_the_min_norm_point_equals_the_exhaustive_one(name, grads):
    gram, w = _solve(grads)
    want, _ = _exhaustive(gram)
    assert w.min() >= 0 and w.sum() == pytest.approx(1.0, abs=1e-12)
    assert w @ gram @ w == pytest.approx(want, rel=1e-9, abs=1e-12 * gram.diagonal().max())
    # MGDA's promise: the common direction d lowers no task's loss, g_i . d >= |d|^2.
    d = w @ grads
    assert (grads @ d >= d @ d - 1e-9 * gram.diagonal().max()).all()


@pytest.mark.parametrize("t", [20, 50])
def test_the_simplex_optimality_conditions_hold_at_many_tasks(t):
    """Beyond exhaustive search: the KKT conditions of min w^T G w on the simplex, which
    are sufficient for this convex problem: (G w)_j >= w^T G w for every j."""
    rng = np.random.default_rng(t)
    grads = rng.normal(size=(t, 16)) * 10 ** rng.uniform(-2, 3, size=(t, 1))
    gram, w = _solve(grads)
    gw = gram @ w
    assert w.min() >= 0 and w.sum() == pytest.approx(1.0, abs=1e-12)
    assert w @ gw - gw.min() <= 1e-12 * gram.diagonal().max()


def test_mgda_in_float32_is_exact_to_float32():
    grads = np.random.default_rng(3).normal(size=(10, 8))
    gram = grads @ grads.T
    want, _ = _exhaustive(gram)
    _, w = weighting.get("mgda").build(10).combine(tf.constant(grads, tf.float32), tf.ones(10))
    w = w.numpy().astype(np.float64)
    assert w @ gram @ w == pytest.approx(want, rel=1e-5)
