"""SDMGrad, stochastic direction-oriented multi-objective gradient (Xiao et al., NeurIPS 2023)."""

import tensorflow as tf

from mtl_tf.weighting.base import check_number, register
from mtl_tf.weighting.several_batches import SeveralBatches
from mtl_tf.weighting.simplex import project_to_simplex, uniform_weights


@register("sdmgrad")
class SDMGrad(SeveralBatches):
    """SDMGrad (Xiao, Ban and Ji, "Direction-oriented Multi-objective Learning: Simple and
    Provable Stochastic Algorithms", NeurIPS 2023): w on the simplex minimises
    1/2 ||G w + lambda g0||^2 (g0 the mean gradient), by `iterations` projected SGD
    steps with momentum from the previous step's w, each on the unbiased estimate
    A (w + lambda / T 1), A = G1 G2^T from two independent samples, divided by
    mean(sqrt(diag A))^2 + 1e-8; the shared gradient is T (G3^T w + lambda g0_3) / (1 + lambda)
    on a third sample (times T: equal gradients step like the sum of the losses). The
    samples are three parts of the batch (`several_batches`).

    As TorchJD and the authors' `OptMN-Lab/sdmgrad`: the inner rate 10 and momentum 0.5
    (LibMTL's rate is 5), the velocity restarted each step, w kept; lambda 0.3 and 20
    iterations as the authors' experiments and LibMTL (their class default is 0.6). The
    iterations are the method's, not a solver to tolerance. The authors' code hands all
    three samples the same tensor (a list of one tensor times 3), so their runs are
    single-sample; here the three parts are distinct.

    Args:
        lamda: float >= 0. The pull towards the mean gradient. Defaults to `0.3`.
        iterations: int. Inner steps. Defaults to `20`.
        inner_learning_rate: float > 0. Defaults to `10.0`.
    """

    def __init__(self, lamda=0.3, iterations=20, inner_learning_rate=10.0, mode="parameters"):
        super().__init__(mode)
        self.lamda = float(check_number("lamda", lamda, low=0))
        self.iterations = check_number("iterations", iterations, low=1, integer=True)
        self.inner_learning_rate = float(check_number("inner_learning_rate", inner_learning_rate,
                                                      low=0, low_open=True))

    def build(self, num_tasks):
        super().build(num_tasks)
        self.weights = uniform_weights(num_tasks)
        return self

    def combine_parts(self, parts, losses):
        step_part, first, second = parts  # LibMTL's order: the first sample makes the step
        t = self.num_tasks
        cross = tf.matmul(first, second, transpose_b=True)
        scale = tf.reduce_mean(tf.sqrt(tf.maximum(tf.linalg.diag_part(cross), 0.0)))
        cross = cross / (scale**2 + 1e-8)
        pull = self.lamda * tf.reduce_mean(cross, axis=1)
        w = tf.cast(self.weights, cross.dtype)
        velocity = tf.zeros_like(w)
        for _ in range(self.iterations):
            velocity = 0.5 * velocity + tf.linalg.matvec(cross, w) + pull
            w = project_to_simplex(w - self.inner_learning_rate * velocity)
        self.weights.assign(tf.cast(w, self.weights.dtype))
        coefficients = (w + self.lamda / t) / (1 + self.lamda)
        return t * tf.linalg.matvec(step_part, coefficients, transpose_a=True), w

    def get_config(self):
        return {**super().get_config(), "lamda": self.lamda, "iterations": self.iterations,
                "inner_learning_rate": self.inner_learning_rate}
