"""IMTL: IMTL-L, IMTL-G and their hybrid (Liu et al., ICLR 2021)."""

import tensorflow as tf

from mtl_tf.weighting.base import Weighting, register
from mtl_tf.weighting.gradient_level import GradientLevel


def imtl_g_weights(gram):
    """alpha with sum 1 such that sum_t alpha_t g_t has the same projection on every
    unit gradient g_t / ||g_t|| (the paper's closed form): G alpha = k n with
    n_t = ||g_t||, so alpha = G^+ n / (1^T G^+ n). The pseudo-inverse, as TorchJD has it,
    also serves linearly dependent gradients (duplicated tasks, more tasks than
    dimensions), where the paper's inverse does not exist; alpha is 0 if 1^T G^+ n = 0."""
    g = tf.cast(gram, tf.float64)
    g = (g + tf.transpose(g)) / 2
    norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(g), 0.0))
    scale = tf.reduce_max(norms)
    v = tf.linalg.matvec(tf.linalg.pinv(tf.math.divide_no_nan(g, scale**2)),
                         tf.math.divide_no_nan(norms, scale))
    total = tf.reduce_sum(v)
    alpha = tf.where(tf.abs(total) > 1e-12 * tf.reduce_max(tf.abs(v)), v / total, tf.zeros_like(v))
    return tf.cast(alpha, gram.dtype)


class _LossScales:
    """IMTL-L's learned s_t (from 0), trained by the model's optimizer on
    sum_t e^{s_t} L_t - s_t; shared by `imtl_l` and `imtl`."""

    def build(self, num_tasks):
        super().build(num_tasks)
        self.log_scale = tf.Variable(tf.zeros([num_tasks]), name="log_scale")
        return self

    @property
    def trainable(self):
        return [self.log_scale]

    def scaled_losses(self, losses):
        """e^{s_t} L_t - s_t per task."""
        return tf.exp(self.log_scale) * tf.cast(losses, tf.float32) - self.log_scale


@register("imtl_l")
class IMTLL(_LossScales, Weighting):
    """IMTL-L (Liu, Li, Kuang, Xue, Chen, Yang, Liao and Zhang, "Towards Impartial
    Multi-task Learning", ICLR 2021): learns s_t (from 0) with the model's optimizer and
    minimises sum_t e^{s_t} L_t - s_t, whose optimum e^{s_t} L_t = 1 makes every scaled
    loss equal (the same with LibMTL and TorchJD)."""

    def loss_weights(self, losses):
        return tf.exp(self.log_scale)

    def total_loss(self, losses):
        return tf.reduce_sum(self.scaled_losses(losses))

    def group_loss(self, losses, group):
        return tf.reduce_sum(group * self.scaled_losses(losses))


@register("imtl_g")
class IMTLG(GradientLevel):
    """IMTL-G (Liu et al., ICLR 2021): the combination sum_t alpha_t g_t, sum alpha = 1,
    whose projections on the unit task gradients are all equal (`imtl_g_weights`).
    alpha may be negative. Returns T alpha, so that equal gradients step like the sum
    of the losses (the paper, LibMTL and TorchJD keep sum alpha = 1).

    Args:
        mode: `"representation"` or `"parameters"`.
    """

    def coefficients(self, gram, losses):
        alpha = imtl_g_weights(gram)
        return self.num_tasks * alpha, alpha


@register("imtl")
class IMTL(_LossScales, GradientLevel):
    """IMTL (Liu et al., ICLR 2021), the paper's hybrid, as LibMTL's `IMTL.py` has it:
    IMTL-L's scales e^{s_t} on the losses, IMTL-G on the gradients of the scaled losses
    e^{s_t} g_t for the shared part (times T, as `imtl_g`), and each task head and each
    s_t trained by the model's optimizer on e^{s_t} L_t - s_t.

    Args:
        mode: `"representation"` or `"parameters"`.
    """

    weights_heads = True

    def total_loss(self, losses):
        """What the trainer differentiates for `trainable` (the scales)."""
        return tf.reduce_sum(self.scaled_losses(tf.stop_gradient(losses)))

    def coefficients(self, gram, losses):
        scale = tf.cast(tf.exp(tf.stop_gradient(self.log_scale)), gram.dtype)
        alpha = imtl_g_weights(scale[:, None] * gram * scale[None, :])
        return self.num_tasks * alpha * scale, tf.cast(scale, tf.float32)
