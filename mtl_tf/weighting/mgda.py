"""MGDA-UB (Sener and Koltun, NeurIPS 2018)."""

import tensorflow as tf

from mtl_tf.weighting.base import register
from mtl_tf.weighting.gradient_level import GradientLevel


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
class MGDA(GradientLevel):
    """MGDA-UB (Sener and Koltun, NeurIPS 2018): the min-norm point of the convex hull of
    the task gradients, taken at the shared representation (their upper bound). Returns
    T * sum_t w_t g_t (scaled by T so the step size matches the sum of the losses).

    Args:
        normalize: bool. Find the weights w on the gradients divided by their norms (the
            authors' "l2" normalisation); as in their code, the weights then apply to the
            original gradients. Defaults to `False`.
        mode: `"representation"` (MGDA-UB) or `"parameters"` (plain MGDA).
    """

    def __init__(self, normalize=False, mode="representation"):
        super().__init__(mode)
        if not isinstance(normalize, bool):
            raise ValueError(f"`normalize` must be True or False. Received: normalize={normalize!r}")
        self.normalize = normalize

    def coefficients(self, gram, losses):
        solved = gram
        if self.normalize:
            norms = tf.sqrt(tf.linalg.diag_part(gram))
            solved = tf.math.divide_no_nan(gram, norms[:, None] * norms[None, :])
        weights = min_norm_weights(solved)
        return self.num_tasks * weights, weights

    def get_config(self):
        return {**super().get_config(), "normalize": self.normalize}
