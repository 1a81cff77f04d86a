"""GradNorm (Chen, Badrinarayanan, Lee and Rabinovich, ICML 2018)."""

import tensorflow as tf

from mtl_tf.weighting.base import Weighting, check_number, register, state_variable


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
        self.alpha = float(check_number("alpha", alpha, low=0))
        self.learning_rate = float(check_number("learning_rate", learning_rate, low=0, low_open=True))

    def build(self, num_tasks):
        super().build(num_tasks)
        self.weights = state_variable(tf.ones([num_tasks]), name="weights")
        self.initial_losses = state_variable(tf.zeros([num_tasks]), name="initial_losses")
        return self

    def loss_weights(self, losses):
        return tf.identity(self.weights)

    def coefficients(self, gram, losses):
        losses = tf.stop_gradient(losses)
        self.initial_losses.assign(tf.where(self.initial_losses > 0, self.initial_losses, losses))
        weights = tf.identity(self.weights)
        norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(gram), 0.0))
        ratio = tf.math.divide_no_nan(losses, self.initial_losses)
        inverse_rate = tf.math.divide_no_nan(ratio, tf.reduce_mean(ratio))
        target = tf.reduce_mean(weights * norms) * inverse_rate ** self.alpha
        # d/dw_t sum_i |w_i n_i - target_i| with the target held constant.
        step = tf.sign(weights * norms - target) * norms
        updated = tf.maximum(weights - self.learning_rate * step, 1e-3)
        self.weights.assign(updated * self.num_tasks / tf.reduce_sum(updated))
        return weights, weights

    def get_config(self):
        return {"alpha": self.alpha, "learning_rate": self.learning_rate}
