"""ConFIG, conflict-free gradients (Liu, Chu and Thuerey, ICLR 2025)."""

import tensorflow as tf

from mtl_tf.weighting.base import register
from mtl_tf.weighting.gradient_level import GradientLevel


@register("config")
class ConFIG(GradientLevel):
    """ConFIG (Liu, Chu and Thuerey, "ConFIG: Towards Conflict-free Training of Physics
    Informed Neural Networks", ICLR 2025): the direction u with the same positive
    cosine to every task gradient, u = pinv(U) 1 with U the unit gradients as rows,
    given the length sum_t g_t . u / ||u|| (their "projection length", the default of
    the authors' `ConFIG_update` and TorchJD's).

    From the Gram matrix alone: with N = diag(||g_t||) and C = N^-1 G N^-1 the cosine
    matrix, pinv(U) = U^T pinv(U U^T), so u = J^T a with a = N^-1 pinv(C) 1, and
    the coefficients are (1^T G a / a^T G a) a. Exact at any rank (the authors'
    least squares assumes full rank); a zero gradient's unit vector is 0, as theirs.
    Equal gradients step like the sum of the losses.

    Args:
        mode: `"representation"` or `"parameters"`.
    """

    def coefficients(self, gram, losses):
        g = tf.cast(gram, tf.float64)
        g = (g + tf.transpose(g)) / 2
        norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(g), 0.0))
        inverse = tf.where(norms > 1e-12 * tf.reduce_max(norms), 1.0 / tf.where(norms > 0, norms, 1.0), 0.0)
        cosine = inverse[:, None] * g * inverse[None, :]
        a = inverse * tf.reduce_sum(tf.linalg.pinv(cosine), axis=1)
        ga = tf.linalg.matvec(g, a)
        length = tf.math.divide_no_nan(tf.reduce_sum(ga), tf.tensordot(a, ga, 1))
        c = tf.cast(length * a, gram.dtype)
        return c, c
