"""FAMO, fast adaptive multitask optimisation (Liu et al., NeurIPS 2023)."""

import tensorflow as tf

from mtl_tf.weighting.base import Weighting, check_number, register, state_variable
from mtl_tf.weighting.scalarization import positive

_EPSILON = 1e-8  # inside the logs: the authors' and LibMTL's


@register("famo")
class FAMO(Weighting):
    """Fast Adaptive Multitask Optimization (Liu, Feng, Stone and Liu, NeurIPS 2023):
    O(1) per step, no per-task gradients. With logits xi and z = softmax(xi), the step
    minimises sum_t z_t log(L_t + eps) / c with c = sum_t z_t / (L_t + eps) held constant:
    each task's weight is (z_t / L_t) / sum_s (z_s / L_s), times T here (the authors'
    weights sum to 1). After the optimizer's step the same batch's losses are computed
    again (one more forward pass; the trainer does it for strategies that ask), and
    xi takes one Adam step on z^T delta + gamma / 2 ||xi||^2, with
    delta_t = log L_t(before) - log L_t(after): a task whose loss fell less gains weight.

    As in the authors' code: Adam with PyTorch's defaults (betas 0.9 and 0.999, eps
    1e-8), gamma as coupled weight decay, eps = 1e-8 in the logs. A task with loss 0 in
    the batch (nothing labelled) weighs 0 in that step, where the authors' eps would give
    it almost all the weight (z / 1e-8) and a zero gradient.
    The second forward pass runs in training mode like the first, as the authors' and
    LibMTL's do: dropout draws new masks, and batch normalisation updates its moving
    statistics a second time.

    Args:
        learning_rate: float. Adam's step on the logits. Defaults to `0.025` (the
            paper's, the authors' and LibMTL's).
        gamma: float. The logits' weight decay. Defaults to `0.01` (the authors'
            `famo.py` and command line; their `weight_methods.py` has 1e-5, LibMTL 1e-3).
    """

    needs_losses_after_step = True

    def __init__(self, learning_rate=0.025, gamma=0.01):
        super().__init__()
        self.learning_rate = float(check_number("learning_rate", learning_rate, low=0, low_open=True))
        self.gamma = float(check_number("gamma", gamma, low=0))

    def build(self, num_tasks):
        super().build(num_tasks)
        self.logits = state_variable(tf.zeros([num_tasks]), name="logits")
        self.first_moment = state_variable(tf.zeros([num_tasks]), name="first_moment")
        self.second_moment = state_variable(tf.zeros([num_tasks]), name="second_moment")
        self.updates = state_variable(0.0, name="updates")
        return self

    def loss_weights(self, losses):
        share = tf.nn.softmax(self.logits) / (tf.stop_gradient(losses) + _EPSILON)
        share = tf.where(positive(losses), share, tf.zeros_like(share))
        return self.num_tasks * tf.math.divide_no_nan(share, tf.reduce_sum(share))

    def after_step(self, before, after):
        delta = tf.math.log(tf.stop_gradient(before) + _EPSILON) - tf.math.log(after + _EPSILON)
        z = tf.nn.softmax(self.logits)
        grad = z * (delta - tf.tensordot(z, delta, 1)) + self.gamma * self.logits
        self.updates.assign_add(1.0)
        self.first_moment.assign(0.9 * self.first_moment + 0.1 * grad)
        self.second_moment.assign(0.999 * self.second_moment + 0.001 * grad**2)
        m_hat = self.first_moment / (1.0 - 0.9**self.updates)
        v_hat = self.second_moment / (1.0 - 0.999**self.updates)
        self.logits.assign_sub(self.learning_rate * m_hat / (tf.sqrt(v_hat) + 1e-8))

    def get_config(self):
        return {"learning_rate": self.learning_rate, "gamma": self.gamma}
