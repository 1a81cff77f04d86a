"""Uncertainty weighting (Kendall, Gal and Cipolla, CVPR 2018)."""

import tensorflow as tf

from mtl_tf.weighting.base import Weighting, register


@register("uncertainty")
class Uncertainty(Weighting):
    """Homoscedastic uncertainty weighting (Kendall, Gal and Cipolla, CVPR 2018).

    Learns s_t = log sigma_t^2 per task with the model's optimizer and minimises
    sum_t 0.5 exp(-s_t) L_t + 0.5 s_t, whose optimum is s_t = log L_t: a task with a
    larger loss gets a smaller weight exp(-s_t) / 2.
    """

    def build(self, num_tasks):
        super().build(num_tasks)
        self.log_variance = tf.Variable(tf.zeros([num_tasks]), name="log_variance")
        return self

    @property
    def trainable(self):
        return [self.log_variance]

    def loss_weights(self, losses):
        return 0.5 * tf.exp(-self.log_variance)

    def total_loss(self, losses):
        return tf.reduce_sum(0.5 * tf.exp(-self.log_variance) * losses + 0.5 * self.log_variance)

    def group_loss(self, losses, group):
        return tf.reduce_sum(group * (0.5 * tf.exp(-self.log_variance) * losses + 0.5 * self.log_variance))
