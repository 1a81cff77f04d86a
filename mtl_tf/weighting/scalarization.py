"""The base of strategies that minimise a function f of the task losses (GLS, the sum of
log-losses, STCH, FAMO's step loss): one backward pass, like a weighted sum.

The weight of task t is d f / d L_t at this step's losses: the gradient of f is then
sum_t w_t grad L_t, which is what the trainer logs as the weights, what a group of tasks
minimises under the alternating update, and what a gradient tap divides by.
"""

import tensorflow as tf

from mtl_tf.weighting.base import Weighting


def positive(losses):
    """The tasks with a positive loss. A task with no labelled example in the batch has
    loss 0 (the masked mean); a log or a product of the losses would make the step NaN,
    so the methods built on them leave such a task out of that step."""
    return losses > 0


def safe_log(losses):
    """log L where L > 0, else 0 (with a zero gradient: the task is left out)."""
    present = positive(losses)
    return tf.where(present, tf.math.log(tf.where(present, losses, tf.ones_like(losses))),
                    tf.zeros_like(losses))


class Scalarization(Weighting):
    """Subclasses define `scalarize(losses)`, the scalar to minimise."""

    def scalarize(self, losses):
        raise NotImplementedError

    def total_loss(self, losses):
        return self.scalarize(losses)

    def loss_weights(self, losses):
        losses = tf.stop_gradient(losses)
        with tf.GradientTape() as tape:
            tape.watch(losses)
            value = self.scalarize(losses)
        return tf.stop_gradient(tape.gradient(value, losses))

    def group_loss(self, losses, group):
        return tf.reduce_sum(group * self.loss_weights(losses) * losses)
