"""MoDo, multi-objective gradient with double sampling (Chen et al., NeurIPS 2023)."""

import tensorflow as tf

from mtl_tf.weighting.base import check_number, register
from mtl_tf.weighting.several_batches import SeveralBatches
from mtl_tf.weighting.simplex import uniform_weights, weights_step


@register("modo")
class MoDo(SeveralBatches):
    """MoDo (Chen, Fernando, Ying and Chen, "Three-Way Trade-Off in Multi-Objective
    Learning: Optimization, Generalization and Conflict-Avoidance", NeurIPS 2023): with
    G1, G2, G3 the per-task gradients on three independent samples, the weights take a
    projected step, lambda <- Proj_simplex(lambda - gamma (G1 G2^T lambda + rho lambda))
    (from 1/T; G1 G2^T is an unbiased estimate of the Gram matrix, which one sample's is
    not), and the shared gradient is T G3^T lambda (times T: equal gradients step like the
    sum of the losses). The three samples are three parts of the batch
    (`several_batches`). As LibMTL's `MoDo.py` (three samples, the third for the step);
    the defaults are the authors' (`heshandevaka/Trade-Off-MOL`) and TorchJD's, where
    LibMTL's gamma is 1e-3.

    Args:
        gamma: float > 0. The weights' step. Defaults to `0.1`.
        rho: float >= 0. The regularisation. Defaults to `0.1`.
    """

    def __init__(self, gamma=0.1, rho=0.1, mode="parameters"):
        super().__init__(mode)
        self.gamma = float(check_number("gamma", gamma, low=0, low_open=True))
        self.rho = float(check_number("rho", rho, low=0))

    def build(self, num_tasks):
        super().build(num_tasks)
        self.weights = uniform_weights(num_tasks)
        return self

    def combine_parts(self, parts, losses):
        first, second, third = parts
        lam = tf.cast(self.weights, first.dtype)
        cross = tf.linalg.matvec(first, tf.linalg.matvec(second, lam, transpose_a=True))
        lam = weights_step(lam, cross, self.gamma, self.rho)
        self.weights.assign(tf.cast(lam, self.weights.dtype))
        return self.num_tasks * tf.linalg.matvec(third, lam, transpose_a=True), lam

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma, "rho": self.rho}
