"""Learned and adaptive loss weights: uncertainty weighting, DWA, GradNorm."""

import tensorflow as tf

from mtl_tf.weighting.base import Weighting, register, state_variable


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
        if temperature <= 0:
            raise ValueError(f"`temperature` must be positive. Received: temperature={temperature!r}")
        self.temperature = float(temperature)

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


@register("gradnorm")
class GradNorm(Weighting):
    """GradNorm (Chen, Badrinarayanan, Lee and Rabinovich, ICML 2018).

    Learns weights w_t so that the norms G_t = w_t ||grad L_t|| move towards
    mean(G) r_t^alpha, with r_t the task's relative inverse training rate
    (L_t / L_t(0)) / mean(L / L(0)); then renormalises sum_t w_t = T. Gradient norms are
    taken at the shared representation (LibMTL's `rep_grad` mode), not at the last
    shared layer's weights. The weights scale both the trunk's and the heads' gradients.

    Args:
        alpha: float. The restoring force. Defaults to `1.5`.
        learning_rate: float. SGD step of the weights. Defaults to `0.025`.
    """

    grad_mode = "representation"

    def __init__(self, alpha=1.5, learning_rate=0.025):
        super().__init__()
        self.alpha = float(alpha)
        self.learning_rate = float(learning_rate)

    def build(self, num_tasks):
        super().build(num_tasks)
        self.weights = state_variable(tf.ones([num_tasks]), name="weights")
        self.initial_losses = state_variable(tf.zeros([num_tasks]), name="initial_losses")
        return self

    def loss_weights(self, losses):
        return tf.identity(self.weights)

    def combine(self, grads, losses):
        losses = tf.stop_gradient(losses)
        self.initial_losses.assign(tf.where(self.initial_losses > 0, self.initial_losses, losses))
        weights = tf.identity(self.weights)
        combined = tf.linalg.matvec(grads, weights, transpose_a=True)
        norms = tf.norm(grads, axis=1)
        ratio = tf.math.divide_no_nan(losses, self.initial_losses)
        inverse_rate = tf.math.divide_no_nan(ratio, tf.reduce_mean(ratio))
        target = tf.reduce_mean(weights * norms) * inverse_rate ** self.alpha
        # d/dw_t sum_i |w_i n_i - target_i| with the target held constant.
        step = tf.sign(weights * norms - target) * norms
        updated = tf.maximum(weights - self.learning_rate * step, 1e-3)
        self.weights.assign(updated * self.num_tasks / tf.reduce_sum(updated))
        return combined, weights

    def get_config(self):
        return {"alpha": self.alpha, "learning_rate": self.learning_rate}
