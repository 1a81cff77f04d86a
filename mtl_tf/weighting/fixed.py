"""Fixed and equal loss weights."""

import tensorflow as tf

from mtl_tf.weighting.base import Weighting, register


@register("fixed")
class Fixed(Weighting):
    """Constant weights, one per task (in task order), e.g. paper 004's fine loss x2.

    Args:
        weights: list of float. One non-negative weight per task.
    """

    def __init__(self, weights):
        super().__init__()
        if not isinstance(weights, (list, tuple)) or not weights or not all(
                isinstance(w, (int, float)) and not isinstance(w, bool) and 0 <= w < float("inf")
                for w in weights):
            raise ValueError(f"`weights` must be non-negative numbers, one per task. "
                             f"Received: weights={weights!r}")
        self.weights = [float(w) for w in weights]

    def build(self, num_tasks):
        if len(self.weights) != num_tasks:
            raise ValueError(f"`weights` must have one entry per task ({num_tasks}). "
                             f"Received: weights={list(self.weights)!r}")
        return super().build(num_tasks)

    def loss_weights(self, losses):
        return tf.constant(self.weights, tf.float32)

    def get_config(self):
        return {"weights": list(self.weights)}


@register("equal")
class Equal(Weighting):
    """Every task weighs 1: the sum of the task losses."""
