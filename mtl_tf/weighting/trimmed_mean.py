"""The coordinate-wise trimmed mean (Yin et al., ICML 2018)."""

import tensorflow as tf

from mtl_tf.weighting.base import check_number, register
from mtl_tf.weighting.per_task_gradients import PerTaskGradients


@register("trimmed_mean")
class TrimmedMean(PerTaskGradients):
    """The coordinate-wise trimmed mean (Yin, Chen, Ramchandran and Bartlett,
    "Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates", ICML
    2018; TorchJD's `TrimmedMean`): at each shared weight, the tasks' gradient values
    sorted, the `trim_number` largest and smallest dropped, the rest averaged; times T.

    It needs T >= 2 trim_number + 1 (TorchJD's rule). The default trims one on each side
    (TorchJD has no default; zero would be the mean, `equal`'s step).

    Args:
        trim_number: int >= 0. Defaults to `1`.
    """

    min_tasks = 3

    def __init__(self, trim_number=1, mode="parameters"):
        super().__init__(mode)
        self.trim_number = check_number("trim_number", trim_number, low=0, integer=True)

    def build(self, num_tasks):
        super().build(num_tasks)
        if num_tasks < 2 * self.trim_number + 1:
            raise ValueError(f"The trimmed mean needs at least 2 * trim_number + 1 = "
                             f"{2 * self.trim_number + 1} tasks. Received: {num_tasks} tasks with "
                             f"trim_number={self.trim_number}")
        return self

    def combine(self, grads, losses):
        t, k = self.num_tasks, self.trim_number
        kept = tf.sort(grads, axis=0)[k:t - k]
        return t * tf.reduce_mean(kept, axis=0), tf.ones([t])

    def get_config(self):
        return {**super().get_config(), "trim_number": self.trim_number}
