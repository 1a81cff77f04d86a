"""MGDA-UB (Sener and Koltun, NeurIPS 2018)."""

import tensorflow as tf

from mtl_tf.weighting.base import register
from mtl_tf.weighting.gradient_level import GradientLevel
from mtl_tf.weighting.min_norm import min_norm_weights


@register("mgda")
class MGDA(GradientLevel):
    """MGDA-UB (Sener and Koltun, NeurIPS 2018): the min-norm point of the convex hull of
    the task gradients, taken at the shared representation (their upper bound). Returns
    T * sum_t w_t g_t (scaled by T so the step size matches the sum of the losses).

    The min-norm point is exact (Wolfe's algorithm, `mtl_tf.weighting.min_norm`), where
    the authors' code and LibMTL run a fixed number of Frank-Wolfe steps (their Alg. 2),
    which at T = 10 stops 13-17% above the minimum norm and, on nearly opposite gradients,
    can give a direction that raises a task's loss.

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
