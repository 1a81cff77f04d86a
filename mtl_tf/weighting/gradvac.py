"""GradVac, Gradient Vaccine (Wang et al., ICLR 2021)."""

import tensorflow as tf

from mtl_tf.weighting.base import check_number, register, state_variable, step_seed
from mtl_tf.weighting.gradient_level import GradientLevel

_EPSILON = 1e-8  # in the cosine's and the correction's denominators (LibMTL's, TorchJD's)


@register("gradvac")
class GradVac(GradientLevel):
    """Gradient Vaccine (Wang, Tsvetkov, Firat and Cao, ICLR 2021): PCGrad's loop with a
    target similarity per pair of tasks instead of 0. For each task i, for the other
    tasks j in a random order: with phi the cosine of the (already corrected) g_i and
    g_j, if phi < target_ij then
    g_i += g_j ||g_i|| (target sqrt(1 - phi^2) - phi sqrt(1 - target^2)) / (||g_j|| sqrt(1 - target^2)),
    and target_ij <- (1 - beta) target_ij + beta phi (after every comparison, as the
    paper's moving average and TorchJD; LibMTL updates it only when it corrects, so its
    targets can only fall). Targets start at 0 and are kept in the checkpoint. Returns
    the sum of the corrected gradients.

    The gradients are one group (the paper's "whole model"); LibMTL also offers one
    target per layer or per weight matrix. The order is PCGrad's: task i visits the
    others in the order of `argsort` of row i of
    `tf.random.stateless_uniform([T, T], seed=(seed, n))` at call n.

    Args:
        beta: float in [0, 1]. The targets' moving-average rate. Defaults to `0.5`
            (LibMTL's and TorchJD's).
        seed: int. Seeds the per-step random order. Defaults to `0`.
        mode: `"representation"` or `"parameters"`.
    """

    def __init__(self, beta=0.5, seed=0, mode="representation"):
        super().__init__(mode)
        self.beta = float(check_number("beta", beta, low=0, high=1))
        self.seed = check_number("seed", seed, low=0, integer=True)

    def build(self, num_tasks):
        super().build(num_tasks)
        self.step = state_variable(0, dtype=tf.int64, name="step")
        self.targets = state_variable(tf.zeros([num_tasks, num_tasks]), name="targets")
        return self

    def coefficients(self, gram, losses):
        t = self.num_tasks
        self.step.assign_add(1)
        keys = tf.random.stateless_uniform([t, t], seed=step_seed(self.seed, self.step))
        order = tf.argsort(keys, axis=1)
        norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(gram), 0.0))
        targets = tf.cast(self.targets, gram.dtype)
        eye = tf.eye(t, dtype=gram.dtype)
        rows, updated = [], []
        for i in range(t):
            c = eye[i]
            target_row = targets[i]
            for k in range(t):
                j = order[i, k]
                cg = tf.linalg.matvec(gram, c)  # g_i^corrected . g_k for every k
                norm_i = tf.sqrt(tf.maximum(tf.tensordot(c, cg, 1), 0.0))
                norm_j = tf.gather(norms, j)
                phi = tf.gather(cg, j) / (norm_i * norm_j + _EPSILON)
                target = tf.gather(target_row, j)
                weight = norm_i * (target * tf.sqrt(tf.maximum(1 - phi**2, 0.0))
                                   - phi * tf.sqrt(tf.maximum(1 - target**2, 0.0))) / (
                    norm_j * tf.sqrt(tf.maximum(1 - target**2, 0.0)) + _EPSILON)
                other = tf.not_equal(j, i)
                c = tf.where(tf.logical_and(other, phi < target), c + weight * tf.one_hot(j, t, dtype=gram.dtype), c)
                moved = (1 - self.beta) * target + self.beta * phi
                target_row = tf.where(tf.logical_and(other, tf.range(t) == j), moved, target_row)
            rows.append(c)
            updated.append(target_row)
        self.targets.assign(tf.cast(tf.stack(updated), tf.float32))
        total = tf.add_n(rows)
        return total, tf.ones([t])

    def get_config(self):
        return {**super().get_config(), "beta": self.beta, "seed": self.seed}
