"""The scale-invariant sum of log-losses (the "SI" baseline of Navon et al., ICML 2022)."""

import tensorflow as tf

from mtl_tf.weighting.base import register
from mtl_tf.weighting.scalarization import Scalarization, safe_log


@register("scale_invariant")
class ScaleInvariant(Scalarization):
    """Minimises sum_t log L_t (Navon et al., "Multi-Task Learning as a Bargaining Game",
    ICML 2022, their SI baseline; `scaleinvls` in the authors' code): its gradient
    sum_t grad L_t / L_t does not change when a task's loss is multiplied by a constant.
    Neither LibMTL nor TorchJD has it as a method. As in the authors' code there is no
    epsilon; a task with loss 0 in a batch is left out of that step instead of making
    it -inf.
    """

    def scalarize(self, losses):
        return tf.reduce_sum(safe_log(losses))
