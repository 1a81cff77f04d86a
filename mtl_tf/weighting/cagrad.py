"""CAGrad (Liu et al., NeurIPS 2021)."""

import tensorflow as tf

from mtl_tf.weighting.base import check_number, register
from mtl_tf.weighting.gradient_level import GradientLevel


@register("cagrad")
class CAGrad(GradientLevel):
    """Conflict-Averse Gradient descent (Liu et al., NeurIPS 2021).

    With g0 the mean gradient, finds w on the simplex minimising
    w^T G g0 + sqrt(phi) ||G^T w||, phi = c^2 ||g0||^2 (by mirror descent on the T x T Gram
    matrix), and returns (g0 + sqrt(phi) G^T w / ||G^T w||) / (1 + c^2), times T so the
    step size matches the sum of the losses.

    Args:
        c: float. The conflict-aversion radius. Defaults to `0.5` (the paper's and LibMTL's).
        iterations: int. Mirror-descent steps. Defaults to `100`.
    """

    def __init__(self, c=0.5, iterations=100, mode="representation"):
        super().__init__(mode)
        self.c = float(check_number("c", c, low=0))
        self.iterations = check_number("iterations", iterations, low=1, integer=True)

    def coefficients(self, gram, losses):
        t = self.num_tasks
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
        # g0 + c ||g0|| G^T w / ||G^T w||, with both norms read off the Gram matrix.
        g0 = tf.sqrt(tf.maximum(tf.reduce_mean(gram), 0.0))
        gw = tf.sqrt(tf.maximum(tf.tensordot(w, tf.linalg.matvec(gram, w), 1), 0.0))
        direction = tf.fill([t], 1.0 / t) + self.c * tf.math.divide_no_nan(g0, gw) * w
        return t * direction / (1.0 + self.c**2), w

    def get_config(self):
        return {**super().get_config(), "c": self.c, "iterations": self.iterations}
