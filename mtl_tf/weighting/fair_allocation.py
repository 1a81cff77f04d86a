"""The positive solution of G w = w^(-p): Nash-MTL's bargaining equation (p = 1) and
FairGrad's alpha-fair one (p = 1 / alpha), from the Gram matrix only.

G w = w^(-p) is where the gradient of the strictly convex
F(w) = 1/2 w^T G w - sum_i phi(w_i) vanishes, with phi = log for p = 1 and
phi(w) = w^(1-p) / (1-p) otherwise: its Hessian G + p diag(w^(-p-1)) is positive definite
on w > 0 even where G is only semi-definite. So damped Newton (a backtracking line search
that keeps w > 0 and lowers F) converges to the one solution, quadratically near it;
it stops when every task's equation holds to 1e-12, (G w)_i w_i^p = 1, or when the line
search has to cut the step 2^30-fold (near Pareto-stationary gradients the cancellation
in G w leaves the equations at about 1e-4, the best float64 allows there; the loop used
to crawl on to its cap of 100 steps, 240 ms per training step on the 2-D toy). The authors of
Nash-MTL run 20 convex-concave iterations of cvxpy (ECOS), FairGrad's scipy's
`least_squares`; neither is exact nor runs inside a compiled step.

A task whose gradient is zero cannot meet (G w)_i = w_i^(-p) > 0: it constrains nothing
(g_i . d = 0 whatever d) and gets w_i = 0. Gradients with a non-negative combination
equal to 0 (Pareto-stationary) have no solution either; a ridge of 1e-13 of each task's squared norm keeps
the problem solvable there.
"""

import tensorflow as tf

from mtl_tf.weighting.base import check_number

_RIDGE = 1e-13
_TOLERANCE = 1e-12
_NEWTON_STEPS = 100
_HALVINGS = 30


def fair_weights(gram, power):
    """The w > 0 with G w = w^(-power) (w_i = 0 where g_i = 0), in `gram`'s dtype."""
    dtype = gram.dtype
    g = tf.cast(gram, tf.float64)
    g = (g + tf.transpose(g)) / 2
    t = g.shape[0]
    p = tf.constant(power, tf.float64)
    top = tf.reduce_max(tf.linalg.diag_part(g))
    g = tf.math.divide_no_nan(g, top)
    allowed = tf.linalg.diag_part(g) > 1e-24
    mask = tf.cast(allowed, tf.float64)
    eye = tf.eye(t, dtype=tf.float64)
    # Left-out tasks solve w_i = 1 on their own, and are zeroed at the end.
    # The ridge is a share of each task's own squared norm, so scaling a task's gradient
    # still scales its weight exactly (Nash-MTL's invariance).
    g = g * mask[:, None] * mask[None, :] + eye * (1 - mask) + _RIDGE * tf.linalg.diag(tf.linalg.diag_part(g))

    def barrier(w):
        if power == 1.0:
            return tf.math.log(w)
        return w ** (1 - p) / (1 - p)

    def objective(w):
        return 0.5 * tf.tensordot(w, tf.linalg.matvec(g, w), 1) - tf.reduce_sum(barrier(w))

    def residual(w):
        return tf.reduce_max(tf.abs(tf.linalg.matvec(g, w) * w**p - 1.0))

    def cond(i, w, stalled):
        return tf.logical_and(tf.logical_and(i < _NEWTON_STEPS, residual(w) > _TOLERANCE), tf.logical_not(stalled))

    def body(i, w, stalled):
        grad = tf.linalg.matvec(g, w) - w ** (-p)
        hessian = g + tf.linalg.diag(p * w ** (-p - 1))
        step = -tf.linalg.solve(hessian, grad[:, None])[:, 0]
        value = objective(w)

        def worse(k, s):
            trial = w + s * step
            bad = tf.logical_or(tf.reduce_any(trial <= 0),
                                objective(tf.maximum(trial, 1e-300)) > value + 1e-4 * s * tf.tensordot(grad, step, 1))
            return tf.logical_and(k < _HALVINGS, bad)

        k, s = tf.while_loop(worse, lambda k, s: (k + 1, s / 2), (0, tf.ones([], tf.float64)))
        # A step cut 2^30-fold is lost in w's rounding: w is as good as float64 allows
        # (near Pareto-stationary gradients F is flat to rounding, and a vanishing step
        # passes Armijo's test each time), and every later step would do the same.
        stalled = k >= _HALVINGS
        return i + 1, tf.where(stalled, w, w + s * step), stalled

    # Where G is diagonal this start is the answer: G_ii w_i = w_i^(-p).
    start = tf.linalg.diag_part(g) ** (-1 / (1 + p))
    _, w, _ = tf.while_loop(cond, body, (0, start, tf.constant(False)))
    # Undo the scaling: G = top * g gives w = top^(-1 / (1 + p)) times g's.
    w = w * mask * tf.math.divide_no_nan(tf.ones([], tf.float64), top) ** (1 / (1 + p))
    return tf.cast(tf.where(top > 0, w, tf.zeros_like(w)), dtype)


def clip_coefficients(gram, coefficients, max_norm):
    """Scales the coefficients so that ||sum_t c_t g_t|| <= max_norm (if set)."""
    if max_norm is None:
        return coefficients
    norm = tf.sqrt(tf.maximum(tf.tensordot(coefficients, tf.linalg.matvec(gram, coefficients), 1), 0.0))
    return coefficients * tf.minimum(1.0, tf.math.divide_no_nan(tf.cast(max_norm, gram.dtype), norm))


def check_max_norm(value):
    return None if value is None else float(check_number("max_norm", value, low=0, low_open=True))
