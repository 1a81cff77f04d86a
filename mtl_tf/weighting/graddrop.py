"""GradDrop, gradient sign dropout (Chen et al., NeurIPS 2020)."""

import tensorflow as tf

from mtl_tf.weighting.base import check_number, register, state_variable, step_seed
from mtl_tf.weighting.per_task_gradients import PerTaskGradients

_EPSILON = 1e-7  # in P's denominator (the authors' lingvo code and LibMTL)


@register("graddrop")
class GradDrop(PerTaskGradients):
    """Gradient Sign Dropout (Chen, Ngiam, Huang, Luong, Kretzschmar, Chai and Anguelov,
    "Just Pick a Sign", NeurIPS 2020): per coordinate, the positive sign purity
    P = (1 + sum_t g_t / (sum_t |g_t| + eps)) / 2 and one U ~ Uniform(0, 1); each task keeps
    the coordinates of its gradient whose sign won, M_t = [P > U][g_t > 0] + [P < U][g_t < 0],
    and the result is sum_t (leak + (1 - leak) M_t) g_t.

    Applied to the gradients of the shared weights, as TorchJD's `GradDrop` and the
    SDMGrad authors' baseline do; the paper (and LibMTL) apply it to a shared activation,
    each example's gradient times the activation's sign, summed over the batch. The draw
    of call n is `tf.random.stateless_uniform([P], seed=(seed, n))` (n kept in the
    checkpoint), the same on every replica.

    Args:
        leak: float in [0, 1]. The share of each gradient passed unmasked. Defaults to
            `0.0` (LibMTL's; the paper allows one per task).
        seed: int. Defaults to `0`.
    """

    def __init__(self, leak=0.0, seed=0, mode="parameters"):
        super().__init__(mode)
        self.leak = float(check_number("leak", leak, low=0, high=1))
        self.seed = check_number("seed", seed, low=0, integer=True)

    def build(self, num_tasks):
        super().build(num_tasks)
        self.step = state_variable(0, dtype=tf.int64, name="step")
        return self

    def combine(self, grads, losses):
        self.step.assign_add(1)
        purity = 0.5 * (1 + tf.reduce_sum(grads, 0) / (tf.reduce_sum(tf.abs(grads), 0) + _EPSILON))
        u = tf.random.stateless_uniform(tf.shape(purity), seed=step_seed(self.seed, self.step),
                                        dtype=grads.dtype)
        keep = tf.logical_or(tf.logical_and(purity > u, grads > 0), tf.logical_and(purity < u, grads < 0))
        mask = self.leak + (1 - self.leak) * tf.cast(keep, grads.dtype)
        return tf.reduce_sum(mask * grads, axis=0), tf.ones([self.num_tasks])

    def get_config(self):
        return {**super().get_config(), "leak": self.leak, "seed": self.seed}
