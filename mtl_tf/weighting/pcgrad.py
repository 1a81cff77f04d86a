"""PCGrad (Yu et al., NeurIPS 2020)."""

import tensorflow as tf

from mtl_tf.weighting.base import check_number, register, state_variable, step_seed
from mtl_tf.weighting.gradient_level import GradientLevel


@register("pcgrad")
class PCGrad(GradientLevel):
    """Projecting Conflicting Gradients (Yu et al., NeurIPS 2020).

    For each task i, in a random order of the others j: if g_i . g_j < 0, replace g_i by
    g_i - (g_i . g_j) / ||g_j||^2 g_j. Returns the sum of the projected gradients. With two
    tasks whose gradients conflict, the result is g_1 + g_2 minus each one's component
    along the other.

    The order is drawn afresh at each call n (counted from 1, kept in the checkpoint):
    task i visits the others in the order of `argsort` of row i of
    `tf.random.stateless_uniform([T, T], seed=(seed, n))`, so runs repeat exactly.

    Args:
        seed: int. Seeds the per-step random order. Defaults to `0`.
        mode: `"representation"` or `"parameters"`.
    """

    def __init__(self, seed=0, mode="representation"):
        super().__init__(mode)
        self.seed = check_number("seed", seed, low=0, integer=True)

    def build(self, num_tasks):
        super().build(num_tasks)
        self.step = state_variable(0, dtype=tf.int64, name="step")
        return self

    def coefficients(self, gram, losses):
        # Each projected gradient is kept as its coefficients over the original ones, so
        # g_i . g_j is read off the Gram matrix.
        t = self.num_tasks
        self.step.assign_add(1)
        keys = tf.random.stateless_uniform([t, t], seed=step_seed(self.seed, self.step))
        order = tf.argsort(keys, axis=1)
        eye = tf.eye(t, dtype=gram.dtype)
        total = tf.zeros([t], gram.dtype)
        for i in range(t):
            c = eye[i]
            for k in range(t):
                j = order[i, k]
                dot = tf.tensordot(c, tf.gather(gram, j), 1)
                conflict = tf.logical_and(tf.not_equal(j, i), dot < 0)
                scale = tf.math.divide_no_nan(dot, tf.gather_nd(gram, tf.stack([j, j])[None])[0])
                c = tf.where(conflict, c - scale * tf.one_hot(j, t, dtype=gram.dtype), c)
            total += c
        return total, tf.ones([t])

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}
