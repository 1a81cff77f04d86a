"""ExcessMTL, robust multi-task learning with excess risks (He et al., ICML 2024)."""

import tensorflow as tf

from mtl_tf.weighting.base import check_number, register, state_variable
from mtl_tf.weighting.per_task_gradients import PerTaskGradients

_EPSILON = 1e-7  # inside the square root (the authors')


@register("excess_mtl")
class ExcessMTL(PerTaskGradients):
    """ExcessMTL (He, Zhou, Zhang, Yun, Xu, Zeng, Chilimbi and Zhao, "Robust Multi-Task
    Learning with Excess Risks", ICML 2024): weights tasks by their estimated excess risk
    E_t = g_t^T H_t^-1 g_t, with H_t = sqrt(sum of g_t^2 so far + eps) elementwise (an
    Adagrad-like diagonal), by exponentiated gradient: w_t <- w_t exp(eta E_t / E_t^0),
    renormalised to sum T, E^0 the first step's (the weights stay 1 on it). The shared
    gradient is sum_t w_t g_t and each head's is scaled by its w_t, as in the authors'
    code (`yifei-he/ExcessMTL`, the same in LibMTL). The paper takes E^0 over the first
    three epochs; the authors' code and this one over the first step. A task whose first
    gradient is 0 keeps ratio 0 (the authors' divide by it).

    Args:
        robust_step_size: float > 0. eta. Defaults to `0.01` (the authors' and LibMTL's;
            TorchJD's is 1.0 on weights that sum to 1).
    """

    gradient_state = True
    weights_heads = True

    def __init__(self, robust_step_size=0.01, mode="parameters"):
        super().__init__(mode)
        self.robust_step_size = float(check_number("robust_step_size", robust_step_size, low=0, low_open=True))

    def build(self, num_tasks):
        super().build(num_tasks)
        self.weights = state_variable(tf.ones([num_tasks]), name="weights")
        self.baseline = state_variable(tf.zeros([num_tasks]), name="baseline")
        self.started = state_variable(False, dtype=tf.bool, name="started")
        return self

    def build_gradient_state(self, size):
        self.squares = state_variable(tf.zeros([self.num_tasks, size]), name="squares")

    def combine(self, grads, losses):
        squares = tf.cast(self.squares, grads.dtype) + grads**2
        self.squares.assign(tf.cast(squares, self.squares.dtype))
        risk = tf.cast(tf.reduce_sum(grads**2 / tf.sqrt(squares + _EPSILON), axis=1), tf.float32)
        ratio = tf.math.divide_no_nan(risk, self.baseline)
        # w exp(eta r) / sum, in log space: a first risk near 0 (a flat start) makes the
        # ratio huge, and exp would overflow to inf / inf.
        moved = self.num_tasks * tf.nn.softmax(tf.math.log(self.weights) + self.robust_step_size * ratio)
        self.weights.assign(tf.where(self.started, moved, self.weights))
        self.baseline.assign(tf.where(self.started, self.baseline, risk))
        self.started.assign(True)
        weights = tf.identity(self.weights)
        return tf.linalg.matvec(grads, tf.cast(weights, grads.dtype), transpose_a=True), weights

    def get_config(self):
        return {**super().get_config(), "robust_step_size": self.robust_step_size}
