"""Aligned-MTL (Senushkin et al., CVPR 2023)."""

import numpy as np
import tensorflow as tf

from mtl_tf.weighting.base import register
from mtl_tf.weighting.gradient_level import GradientLevel

_SCALES = ("min", "median", "rmse")


@register("aligned_mtl")
class AlignedMTL(GradientLevel):
    """Aligned-MTL (Senushkin, Patakin, Kuznetsov and Konushin, "Independent Component
    Alignment for Multi-Task Learning", CVPR 2023): the task gradients are replaced by
    aligned ones with condition number 1, J^T B with B = sigma V Lambda^{-1/2} V^T
    (G = V Lambda V^T, eigenvalues below max(lambda) T eps dropped), and summed:
    coefficients B 1. The aligned gradients are orthogonal with equal norms sigma:
    sqrt of the smallest kept eigenvalue (`"min"`, the authors' and LibMTL's default),
    of their median, or of their mean (`"rmse"`). Equal gradients step like the sum of
    the losses (TorchJD takes the mean, B 1 / T). With no gradient (rank 0) the
    coefficients are 1, as TorchJD's B = I.

    eps is that of the gradients' dtype (the authors' code takes float32's always).

    Args:
        scale: `"min"`, `"median"` or `"rmse"`. Defaults to `"min"`.
        mode: `"representation"` or `"parameters"`.
    """

    def __init__(self, scale="min", mode="representation"):
        super().__init__(mode)
        if scale not in _SCALES:
            raise ValueError(f"`scale` must be one of {list(_SCALES)}. Received: scale={scale!r}")
        self.scale = scale

    def coefficients(self, gram, losses):
        t = self.num_tasks
        g = tf.cast(gram, tf.float64)
        values, vectors = tf.linalg.eigh((g + tf.transpose(g)) / 2)  # ascending
        tolerance = tf.reduce_max(values) * t * np.finfo(gram.dtype.as_numpy_dtype).eps
        kept = values > tolerance
        count = tf.reduce_sum(tf.cast(kept, tf.int32))
        # The kept eigenvalues are the largest `count`, values[t - count:].
        if self.scale == "min":
            index = t - count
        elif self.scale == "median":  # the lower median, as torch.median
            index = t - count + (count - 1) // 2
        if self.scale == "rmse":
            sigma2 = tf.reduce_sum(tf.where(kept, values, 0.0)) / tf.cast(tf.maximum(count, 1), tf.float64)
        else:
            sigma2 = tf.gather(values, tf.clip_by_value(index, 0, t - 1))
        inverse_root = tf.where(kept, tf.math.rsqrt(tf.where(kept, values, 1.0)), 0.0)
        b = tf.sqrt(sigma2) * tf.matmul(vectors * inverse_root[None, :], vectors, transpose_b=True)
        c = tf.where(count > 0, tf.reduce_sum(b, axis=1), tf.ones([t], tf.float64))
        c = tf.cast(c, gram.dtype)
        return c, c

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}
