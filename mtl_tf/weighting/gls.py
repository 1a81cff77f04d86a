"""GLS, the geometric loss strategy (Chennupati et al., CVPR Workshops 2019)."""

import tensorflow as tf

from mtl_tf.weighting.base import register
from mtl_tf.weighting.scalarization import Scalarization, positive, safe_log


@register("gls")
class GLS(Scalarization):
    """Geometric loss strategy (Chennupati, Sistu, Yogamani and Rawashdeh, "MultiNet++",
    CVPR Workshops 2019): minimises the geometric mean of the task losses,
    (prod_t L_t)^(1/T), here times T so that equal losses step like their sum. Its
    gradient is sum_t GM / L_t grad L_t: the direction of the sum of log-losses.

    Computed as exp(mean log L) (as TorchJD does; LibMTL multiplies the losses, which
    under- or overflows at many tasks). A task with loss 0 in a batch (nothing
    labelled) is left out of the mean for that step, where LibMTL and TorchJD give a
    non-finite gradient.
    """

    def scalarize(self, losses):
        present = tf.cast(positive(losses), losses.dtype)
        count = tf.reduce_sum(present)
        mean_log = tf.math.divide_no_nan(tf.reduce_sum(safe_log(losses)), count)
        return tf.cast(self.num_tasks, losses.dtype) * tf.exp(mean_log) * tf.minimum(count, 1.0)
