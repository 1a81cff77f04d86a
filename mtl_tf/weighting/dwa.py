"""Dynamic Weight Average (Liu, Johns and Davison, CVPR 2019)."""

import tensorflow as tf

from mtl_tf.weighting.base import Weighting, check_number, register, state_variable


@register("dwa")
class DynamicWeightAverage(Weighting):
    """Dynamic Weight Average (Liu, Johns and Davison, CVPR 2019).

    w_t(e) = T exp(r_t / temperature) / sum_i exp(r_i / temperature), with
    r_t = L_t(e-1) / L_t(e-2) the ratio of the last two epochs' mean losses; weights are 1
    for the first two epochs.

    Args:
        temperature: float. Defaults to `2.0` (the paper's).
    """

    def __init__(self, temperature=2.0):
        super().__init__()
        self.temperature = float(check_number("temperature", temperature, low=0, low_open=True))

    def build(self, num_tasks):
        super().build(num_tasks)
        self.history = state_variable(tf.zeros([2, num_tasks]), name="history")
        self.epochs_seen = state_variable(0, dtype=tf.int64, name="epochs_seen")
        self.loss_sum = state_variable(tf.zeros([num_tasks]), name="loss_sum")
        self.steps = state_variable(0.0, name="steps")
        self.weights = state_variable(tf.ones([num_tasks]), name="weights")
        return self

    def loss_weights(self, losses):
        return tf.identity(self.weights)

    def observe(self, losses):
        self.loss_sum.assign_add(tf.stop_gradient(losses))
        self.steps.assign_add(1.0)

    def on_epoch_end(self, epoch):
        mean = self.loss_sum / tf.maximum(self.steps, 1.0)
        self.history.assign(tf.stack([self.history[1], mean]))
        self.epochs_seen.assign_add(1)
        self.loss_sum.assign(tf.zeros_like(self.loss_sum))
        self.steps.assign(0.0)
        if int(self.epochs_seen.numpy()) >= 2:
            ratio = tf.math.divide_no_nan(self.history[1], self.history[0])
            self.weights.assign(self.num_tasks * tf.nn.softmax(ratio / self.temperature))

    def get_config(self):
        return {"temperature": self.temperature}
