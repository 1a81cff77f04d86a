"""Projections onto the dual cone of the task gradients, from the Gram matrix only.

The projection of J^T u onto {x : J x >= 0} (no task's loss rises along x) is J^T v with
v = argmin_{v >= u} v^T G v (Quinton and Rey, "Jacobian Descent for Multi-Objective
Optimization", 2024, Prop. 1).

The solver is the Lawson-Hanson active-set method (the non-negative least squares of
z = v - u >= 0 on the columns of J^T, through their Gram matrix): it frees the variable
of most negative gradient, solves on the free set, and steps back to the boundary when
a free variable would turn negative. It ends, in finitely many steps, at the exact
solution (to float64 rounding), for a batch of u at once. A duplicated or zero gradient
never enters the free set (its gradient there is exactly 0), so the solves stay regular.

TorchJD (and LibMTL's copy) solve the same program with quadprog, which needs a
positive-definite matrix: they divide G by its trace and add 1e-4 I (`reg_eps`), and
return the mean weights when the trace is below 1e-4 (`norm_eps`). Both change the
answer: the ridge lets the result conflict with a task whose gradient is small next to
the others (measured: on gradients of norms 4.1, 1.2 and 0.23, DualProj's direction with
the ridge has cosine -0.024 with the smallest, a loss that rises; here -7e-13), and the
threshold is absolute, so small gradients (a representation's) would silently get the
plain mean. Here G is divided by its trace (which changes nothing) and only a ridge
of 1e-12 of each task's own squared norm guards the rounding; the mean is returned only
when every gradient is zero.
"""

import tensorflow as tf

_RIDGE = 1e-12
_TOLERANCE = 1e-13


def project_weights(gram, u):
    """gram: T x T. u: B x T. Returns the B x T weights v = argmin_{v >= u} v^T G v."""
    dtype = gram.dtype
    g = tf.cast(gram, tf.float64)
    g = (g + tf.transpose(g)) / 2
    u = tf.cast(u, tf.float64)
    trace = tf.linalg.trace(g)
    g = tf.where(trace > 0, g / tf.maximum(trace, 1e-300), tf.zeros_like(g))
    q_matrix = g + _RIDGE * tf.linalg.diag(tf.linalg.diag_part(g))
    z = nonnegative_qp(q_matrix, tf.linalg.matvec(g, u))
    return tf.cast(u + z, dtype)


def nonnegative_qp(q_matrix, q):
    """The Lawson-Hanson active-set solution of min_{z >= 0} z^T Q z / 2 + q^T z for each
    row of q (B x T), Q (T x T) symmetric positive definite and of order one (the
    stopping test is absolute: 1e-13). Returns B x T."""
    t = q_matrix.shape[0]
    eye = tf.eye(t, dtype=tf.float64)

    def gradient(z):
        return tf.linalg.matmul(z, q_matrix) + q  # Q symmetric

    def free_solution(free):
        """The minimiser on each problem's free set (zero elsewhere)."""
        mask = tf.cast(free, tf.float64)
        inner = q_matrix[None] * mask[:, :, None] * mask[:, None, :] + eye[None] * (1 - mask)[:, None, :]
        return tf.linalg.solve(inner, -(q * mask)[..., None])[..., 0] * mask

    def inner_loop(z, free):
        def cond(i, z, free, done):
            return tf.logical_and(i < t + 1, tf.logical_not(tf.reduce_all(done)))

        def body(i, z, free, done):
            s = free_solution(free)
            inside = tf.reduce_all(tf.logical_or(tf.logical_not(free), s > 0), axis=1)
            leaving = tf.logical_and(free, s <= 0)
            ratios = tf.where(leaving, z / tf.maximum(z - s, 1e-300), tf.ones_like(z))
            theta = tf.clip_by_value(tf.reduce_min(ratios, axis=1, keepdims=True), 0.0, 1.0)
            limiting = tf.one_hot(tf.argmin(ratios, axis=1), t, on_value=True, off_value=False)
            stepped = z + theta * (s - z)
            keep = tf.logical_and(tf.logical_and(free, tf.logical_not(limiting)), stepped > 0)
            stepped = tf.where(keep, stepped, tf.zeros_like(z))
            finished = tf.logical_or(done, inside)
            z = tf.where(done[:, None], z, tf.where(inside[:, None], s, stepped))
            free = tf.where(finished[:, None], free, keep)
            return i + 1, z, free, finished

        _, z, free, _ = tf.while_loop(cond, body, (0, z, free, tf.zeros(tf.shape(z)[:1], tf.bool)))
        return z, free

    def not_optimal(z, free):
        # A fixed variable whose gradient is negative should enter.
        return tf.logical_and(tf.logical_not(free), gradient(z) < -_TOLERANCE)

    def cond(i, z, free):
        return tf.logical_and(i < 3 * t, tf.reduce_any(not_optimal(z, free)))

    def body(i, z, free):
        candidates = not_optimal(z, free)
        entering = tf.argmin(tf.where(candidates, gradient(z), tf.zeros_like(z)), axis=1)
        entering = tf.logical_and(tf.one_hot(entering, t, on_value=True, off_value=False),
                                  tf.reduce_any(candidates, axis=1, keepdims=True))
        z, free = inner_loop(z, tf.logical_or(free, entering))
        return i + 1, z, free

    z0 = tf.zeros_like(q)
    _, z, _ = tf.while_loop(cond, body, (0, z0, tf.zeros_like(q, tf.bool)))
    return z
