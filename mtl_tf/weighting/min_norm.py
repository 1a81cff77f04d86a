"""The min-norm point of a convex hull, from the Gram matrix only: Wolfe's algorithm.

min_{w in simplex} w^T G w is what MGDA solves every step. Sener and Koltun (and LibMTL,
`LibMTL/weighting/MGDA.py`) run Frank-Wolfe for a fixed number of steps, which converges
sublinearly: at T = 10 its point is 13-17% off after 250 steps. Wolfe's algorithm (P. Wolfe,
"Finding the nearest point in a polytope", Math. Programming 11, 1976) is an active-set
method that ends, in finitely many steps, at the exact point: it keeps a set S of tasks (the
"corral"), takes the minimum-norm point of their affine hull, and when that point leaves the
hull's simplex walks back to its boundary and drops the tasks that reached zero; a task
enters S when the optimality test says the current point is not yet the nearest.

The optimality test is the simplex's KKT condition: w is optimal when
(G w)_j >= w^T G w for every task j. It is checked in float64 with a tolerance relative to
the largest squared norm, so gradients of any scale (1e-2 to 1e3 apart) are solved alike.
A zero gradient is the answer itself (norm 0). Duplicated tasks never enter together: a
copy of a task in S already meets the test with equality.
"""

import tensorflow as tf

TOLERANCE = 1e-12


def _affine_min_norm(gram, active):
    """The weights of the minimum-norm point of the affine hull of the tasks in `active`
    (zero elsewhere): the KKT system [G_SS 1; 1^T 0] [v; mu] = [0; 1], solved by least
    squares so that affinely dependent tasks (duplicates) cannot make it singular."""
    t = tf.shape(gram)[0]
    mask = tf.cast(active, gram.dtype)
    inner = gram * mask[:, None] * mask[None, :] + tf.linalg.diag(1.0 - mask)
    system = tf.concat([tf.concat([inner, mask[:, None]], 1),
                        tf.concat([mask[None, :], tf.zeros([1, 1], gram.dtype)], 1)], 0)
    rhs = tf.concat([tf.zeros([t, 1], gram.dtype), tf.ones([1, 1], gram.dtype)], 0)
    solution = tf.linalg.pinv(system) @ rhs
    return solution[:t, 0] * mask


def min_norm_weights(gram, max_iterations=None, allowed=None, scale=None):
    """Weights w on the simplex minimising w^T gram w, exact to float64 rounding.

    Args:
        gram: T x T Gram matrix of the task gradients (any float dtype). Only its values
            on the simplex matter, so `gram + k 1 1^T` gives the same weights: CAGrad
            passes a shifted Gram matrix without its large constant part.
        max_iterations: int or None. A cap on the major iterations (default 20 T; Wolfe's
            algorithm ends far sooner, typically in at most T).
        allowed: optional T booleans: the hull of these tasks only (others weigh 0; at
            least one must be allowed).
        scale: optional size of `gram`'s entries for the stopping test (default its
            largest diagonal entry).

    Returns:
        The T weights, in `gram`'s dtype.
    """
    dtype = gram.dtype
    g = tf.cast(gram, tf.float64)
    g = (g + tf.transpose(g)) / 2
    t = g.shape[0] if g.shape[0] is not None else tf.shape(g)[0]
    cap = max_iterations or 20 * t
    diag = tf.linalg.diag_part(g)
    if scale is None:
        scale = tf.reduce_max(diag)
    eps = TOLERANCE * tf.maximum(tf.cast(scale, tf.float64), 1e-300)
    if allowed is None:
        allowed = tf.ones([t], tf.bool)
    inf = tf.constant(float("inf"), tf.float64)
    w0 = tf.one_hot(tf.argmin(tf.where(allowed, diag, inf)), t, dtype=tf.float64)

    def candidates(w):
        return tf.where(allowed, tf.linalg.matvec(g, w), inf)

    def not_optimal(w):
        return tf.tensordot(w, tf.linalg.matvec(g, w), 1) - tf.reduce_min(candidates(w)) > eps

    def minor(w, active):
        """Moves w to the affine minimum of `active`, or as far as the simplex allows,
        dropping the tasks that reach zero, until the affine minimum lies inside."""

        def cond(i, w, active, done):
            return tf.logical_and(tf.logical_not(done), i < t + 1)

        def body(i, w, active, done):
            v = _affine_min_norm(g, active)
            inside = tf.reduce_all(tf.logical_or(tf.logical_not(active), v > 0))
            # The largest step from w towards v that keeps every weight >= 0.
            leaving = tf.logical_and(active, v <= 0)
            ratios = tf.where(leaving, w / tf.maximum(w - v, 1e-300), tf.ones_like(w))
            theta = tf.clip_by_value(tf.reduce_min(ratios), 0.0, 1.0)
            # The task that limits the step leaves (exactly, whatever the rounding).
            limiting = tf.range(t) == tf.cast(tf.argmin(ratios), tf.int32)
            keep = tf.logical_and(active, tf.logical_not(limiting))
            stepped = w + theta * (v - w)
            keep = tf.logical_and(keep, stepped > 0)
            stepped = tf.where(keep, stepped, tf.zeros_like(w))
            w_next = tf.where(inside, v, stepped)
            active_next = tf.where(inside, active, keep)
            return i + 1, w_next, active_next, inside

        _, w, active, _ = tf.while_loop(cond, body, (0, w, active, False))
        return w, active

    def major_cond(i, w, active):
        return tf.logical_and(i < cap, not_optimal(w))

    def major_body(i, w, active):
        j = tf.argmin(candidates(w))
        active = tf.logical_or(active, tf.range(t) == tf.cast(j, tf.int32))
        w, active = minor(w, active)
        return i + 1, w / tf.reduce_sum(w), active

    _, w, _ = tf.while_loop(major_cond, major_body, (0, w0, w0 > 0))
    return tf.cast(w, dtype)
