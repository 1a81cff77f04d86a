"""Gradient-level strategies: PCGrad, MGDA-UB, CAGrad.

Each receives the per-task gradients of the shared part as a T x D matrix (at the shared
representation, or at every shared weight with `grad_mode="parameters"`) and returns one
gradient. The heads get their own tasks' unweighted gradients, as in LibMTL.
"""

import tensorflow as tf

from mtl_tf.weighting.base import Weighting, register, state_variable


class _GradientLevel(Weighting):
    weights_heads = False

    def __init__(self, mode="representation"):
        super().__init__()
        if mode not in ("representation", "parameters"):
            raise ValueError(f"`mode` must be 'representation' or 'parameters'. Received: mode={mode!r}")
        self.grad_mode = mode

    def get_config(self):
        return {"mode": self.grad_mode}


@register("pcgrad")
class PCGrad(_GradientLevel):
    """Projecting Conflicting Gradients (Yu et al., NeurIPS 2020).

    For each task i, in a random order of the others j: if g_i . g_j < 0, replace g_i by
    g_i - (g_i . g_j) / ||g_j||^2 g_j. Returns the sum of the projected gradients. With two
    tasks whose gradients conflict, the result is g_1 + g_2 minus each one's component
    along the other.

    Args:
        seed: int. Seeds the per-step random order (stateless, so runs repeat). Defaults to `0`.
        mode: `"representation"` or `"parameters"`.
    """

    def __init__(self, seed=0, mode="representation"):
        super().__init__(mode)
        self.seed = int(seed)

    def build(self, num_tasks):
        super().build(num_tasks)
        self.step = state_variable(0, dtype=tf.int64, name="step")
        return self

    def combine(self, grads, losses):
        t = self.num_tasks
        self.step.assign_add(1)
        keys = tf.random.stateless_uniform([t, t], seed=tf.stack([tf.cast(self.seed, tf.int64),
                                                                  self.step]))
        order = tf.argsort(keys, axis=1)
        projected = []
        for i in range(t):
            g = grads[i]
            for k in range(t):
                j = order[i, k]
                other = tf.gather(grads, j)
                dot = tf.tensordot(g, other, 1)
                conflict = tf.logical_and(tf.not_equal(j, i), dot < 0)
                scale = tf.math.divide_no_nan(dot, tf.tensordot(other, other, 1))
                g = tf.where(conflict, g - scale * other, g)
            projected.append(g)
        return tf.add_n(projected), tf.ones([t])

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


def min_norm_weights(gram, iterations=250):
    """Frank-Wolfe solution of min_{w in simplex} w^T gram w (Sener and Koltun, Alg. 2);
    exact in closed form for two tasks."""
    t = gram.shape[0]
    if t == 1:
        return tf.ones([1])
    if t == 2:
        g11, g12, g22 = gram[0, 0], gram[0, 1], gram[1, 1]
        alpha = tf.clip_by_value(tf.math.divide_no_nan(g22 - g12, g11 - 2 * g12 + g22), 0.0, 1.0)
        return tf.stack([alpha, 1.0 - alpha])

    def body(i, w):
        grad = tf.linalg.matvec(gram, w)
        e = tf.one_hot(tf.argmin(grad), t)
        # Exact line search between w and the vertex e.
        wgw = tf.tensordot(w, tf.linalg.matvec(gram, w), 1)
        wge = tf.tensordot(w, tf.linalg.matvec(gram, e), 1)
        ege = tf.tensordot(e, tf.linalg.matvec(gram, e), 1)
        gamma = tf.clip_by_value(tf.math.divide_no_nan(wgw - wge, wgw - 2 * wge + ege), 0.0, 1.0)
        return i + 1, (1 - gamma) * w + gamma * e

    _, w = tf.while_loop(lambda i, w: i < iterations, body, (0, tf.fill([t], 1.0 / t)))
    return w


@register("mgda")
class MGDA(_GradientLevel):
    """MGDA-UB (Sener and Koltun, NeurIPS 2018): the min-norm point of the convex hull of
    the task gradients, taken at the shared representation (their upper bound). Returns
    T * sum_t w_t g_t (scaled by T so the step size matches the sum of the losses).

    Args:
        normalize: bool. Divide each gradient by its norm first. Defaults to `False`.
        mode: `"representation"` (MGDA-UB) or `"parameters"` (plain MGDA).
    """

    def __init__(self, normalize=False, mode="representation"):
        super().__init__(mode)
        self.normalize = bool(normalize)

    def combine(self, grads, losses):
        if self.normalize:
            grads = tf.math.divide_no_nan(grads, tf.norm(grads, axis=1, keepdims=True))
        weights = min_norm_weights(tf.matmul(grads, grads, transpose_b=True))
        return self.num_tasks * tf.linalg.matvec(grads, weights, transpose_a=True), weights

    def get_config(self):
        return {**super().get_config(), "normalize": self.normalize}


@register("cagrad")
class CAGrad(_GradientLevel):
    """Conflict-Averse Gradient descent (Liu et al., NeurIPS 2021).

    With g0 the mean gradient, finds w on the simplex minimising
    w^T G g0 + sqrt(phi) ||G^T w||, phi = c^2 ||g0||^2 (by mirror descent on the T x T Gram
    matrix), and returns (g0 + sqrt(phi) G^T w / ||G^T w||) / (1 + c^2), times T so the
    step size matches the sum of the losses.

    Args:
        c: float. The conflict-aversion radius. Defaults to `0.4`.
        iterations: int. Mirror-descent steps. Defaults to `100`.
    """

    def __init__(self, c=0.4, iterations=100, mode="representation"):
        super().__init__(mode)
        if c < 0:
            raise ValueError(f"`c` must be non-negative. Received: c={c!r}")
        self.c = float(c)
        self.iterations = int(iterations)

    def combine(self, grads, losses):
        t = self.num_tasks
        gram = tf.matmul(grads, grads, transpose_b=True)
        scale = tf.sqrt(tf.reduce_mean(tf.linalg.diag_part(gram)) + 1e-12)
        gram_n = gram / scale**2  # well-conditioned steps whatever the gradients' size
        b = tf.reduce_mean(gram_n, axis=1)  # G g0
        g0_norm = tf.sqrt(tf.maximum(tf.reduce_mean(b), 0.0) + 1e-12)
        root_phi = self.c * g0_norm

        def objective(w):
            return tf.tensordot(w, b, 1) + root_phi * tf.sqrt(
                tf.tensordot(w, tf.linalg.matvec(gram_n, w), 1) + 1e-12)

        def body(i, w):
            with tf.GradientTape() as tape:
                tape.watch(w)
                value = objective(w)
            step = tape.gradient(value, w)
            w = w * tf.exp(-0.5 * step)
            return i + 1, w / tf.reduce_sum(w)

        _, w = tf.while_loop(lambda i, w: i < self.iterations, body, (0, tf.fill([t], 1.0 / t)))
        w = tf.stop_gradient(w)
        g0 = tf.reduce_mean(grads, axis=0)
        gw = tf.linalg.matvec(grads, w, transpose_a=True)
        direction = g0 + self.c * tf.norm(g0) * tf.math.divide_no_nan(gw, tf.norm(gw))
        return t * direction / (1.0 + self.c**2), w

    def get_config(self):
        return {**super().get_config(), "c": self.c, "iterations": self.iterations}
