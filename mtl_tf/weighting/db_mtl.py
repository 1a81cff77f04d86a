"""DB-MTL, dual-balancing multi-task learning (Lin et al., 2023)."""

import tensorflow as tf

from mtl_tf.weighting.base import check_number, register, state_variable
from mtl_tf.weighting.per_task_gradients import PerTaskGradients

_EPSILON = 1e-8  # LibMTL's, in the log and in the norm ratio


@register("db_mtl")
class DBMTL(PerTaskGradients):
    """Dual-Balancing Multi-Task Learning (Lin, Jiang, Ye, Zhang, Chen, Chen, Liu, Tsang and
    Kwok, arXiv 2308.12029): balances the loss scales by a log, log(L_t + eps), and the
    gradient scales by rescaling each task's moving average of its log-loss gradient
    to the largest one's norm: with g_t = grad L_t / (L_t + eps) (the log-loss gradient),
    m_t <- beta_k m_t + (1 - beta_k) g_t, beta_k = beta / k^sigma at step k, the shared
    gradient is sum_t (max_s ||m_s|| / (||m_t|| + eps)) m_t. The heads get their own
    log-loss gradients. As LibMTL's `DB_MTL.py` (the authors'): no bias correction of
    the average, so the first step is (1 - beta) of the next ones'.

    Args:
        beta: float in [0, 1). The moving average's rate. Defaults to `0.9` (LibMTL).
        beta_sigma: float >= 0. Its decay exponent. Defaults to `0` (LibMTL).
    """

    gradient_state = True
    weights_heads = True

    def __init__(self, beta=0.9, beta_sigma=0.0, mode="parameters"):
        super().__init__(mode)
        self.beta = float(check_number("beta", beta, low=0, high=1))
        self.beta_sigma = float(check_number("beta_sigma", beta_sigma, low=0))

    def build(self, num_tasks):
        super().build(num_tasks)
        self.step = state_variable(0.0, name="step")
        return self

    def build_gradient_state(self, size):
        self.average = state_variable(tf.zeros([self.num_tasks, size]), name="average")

    def combine(self, grads, losses):
        losses = tf.cast(tf.stop_gradient(losses), grads.dtype)
        log_grads = grads / (losses[:, None] + _EPSILON)
        self.step.assign_add(1.0)
        rate = tf.cast(self.beta / self.step**self.beta_sigma, grads.dtype)
        average = log_grads + rate * (tf.cast(self.average, grads.dtype) - log_grads)
        self.average.assign(tf.cast(average, self.average.dtype))
        norms = tf.norm(average, axis=1)
        scales = tf.reduce_max(norms) / (norms + _EPSILON)
        combined = tf.linalg.matvec(average, scales, transpose_a=True)
        return combined, 1.0 / (losses + _EPSILON)

    def get_config(self):
        return {**super().get_config(), "beta": self.beta, "beta_sigma": self.beta_sigma}
