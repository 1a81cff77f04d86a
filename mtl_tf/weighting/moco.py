"""MoCo, multi-objective gradient correction (Fernando et al., ICLR 2023)."""

import tensorflow as tf

from mtl_tf.weighting.base import check_number, register, state_variable
from mtl_tf.weighting.per_task_gradients import PerTaskGradients
from mtl_tf.weighting.simplex import uniform_weights, weights_step


@register("moco")
class MoCo(PerTaskGradients):
    """MoCo (Fernando, Shen, Liu, Chaudhury, Murugesan and Chen, "Mitigating Gradient Bias
    in Multi-objective Learning: A Provably Convergent Approach", ICLR 2023): tracked
    gradients Y (one row per task) follow the stochastic ones, Y <- Y - beta (Y - G), and
    the weights take a projected step on the regularised min-norm problem,
    lambda <- Proj_simplex(lambda - gamma (Y Y^T + rho I) lambda) (from 1/T); the shared
    gradient is T Y^T lambda (times T: equal gradients step like the sum of the losses).

    As the authors' code (`heshandevaka/Trade-Off-MOL`): constant steps, the simplex
    projection, beta = gamma = rho = 0.1. LibMTL and TorchJD replace the projection by a
    softmax, decay the steps as step / k^0.5 from beta 0.5, gamma 0.1, rho 0, and LibMTL
    also rescales each gradient to its loss (unit direction times L_t).

    Args:
        beta: float in (0, 1]. The tracking rate. Defaults to `0.1`.
        gamma: float > 0. The weights' step. Defaults to `0.1`.
        rho: float >= 0. The regularisation. Defaults to `0.1`.
    """

    gradient_state = True

    def __init__(self, beta=0.1, gamma=0.1, rho=0.1, mode="parameters"):
        super().__init__(mode)
        self.beta = float(check_number("beta", beta, low=0, high=1, low_open=True))
        self.gamma = float(check_number("gamma", gamma, low=0, low_open=True))
        self.rho = float(check_number("rho", rho, low=0))

    def build(self, num_tasks):
        super().build(num_tasks)
        self.weights = uniform_weights(num_tasks)
        return self

    def build_gradient_state(self, size):
        self.tracked = state_variable(tf.zeros([self.num_tasks, size]), name="tracked")

    def combine(self, grads, losses):
        tracked = tf.cast(self.tracked, grads.dtype)
        tracked = tracked - self.beta * (tracked - grads)
        self.tracked.assign(tf.cast(tracked, self.tracked.dtype))
        lam = tf.cast(self.weights, grads.dtype)
        gram = tf.matmul(tracked, tracked, transpose_b=True)
        lam = weights_step(lam, tf.linalg.matvec(gram, lam), self.gamma, self.rho)
        self.weights.assign(tf.cast(lam, self.weights.dtype))
        return self.num_tasks * tf.linalg.matvec(tracked, lam, transpose_a=True), lam

    def get_config(self):
        return {**super().get_config(), "beta": self.beta, "gamma": self.gamma, "rho": self.rho}
