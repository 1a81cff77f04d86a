"""Krum and multi-Krum (Blanchard et al., NeurIPS 2017)."""

import tensorflow as tf

from mtl_tf.weighting.base import check_number, register
from mtl_tf.weighting.gradient_level import GradientLevel


@register("krum")
class Krum(GradientLevel):
    """Krum and multi-Krum (Blanchard, El Mhamdi, Guerraoui and Stainer, "Machine Learning
    with Adversaries: Byzantine Tolerant Gradient Descent", NeurIPS 2017; TorchJD's
    `Krum`): a task gradient's score is the sum of its squared distances to its
    T - f - 2 nearest other gradients (f = `n_byzantine`); the step is the mean of the
    `n_selected` gradients of lowest score, times T. The distances come from the Gram
    matrix, ||g_i - g_j||^2 = G_ii + G_jj - 2 G_ij; equal scores go to the lower index.

    Squared distances, as in the paper's score; TorchJD sums the distances themselves,
    which can select differently. It needs T >= f + 3 (TorchJD's rule: one neighbour at
    least); the paper's guarantee against f arbitrary gradients needs T > 2f + 2.
    Defaults: f = 0 (TorchJD has none) and one selected (the paper's Krum; TorchJD's).

    Args:
        n_byzantine: int >= 0. Defaults to `0`.
        n_selected: int >= 1, at most T. Defaults to `1`.
        mode: `"representation"` or `"parameters"`.
    """

    min_tasks = 3

    def __init__(self, n_byzantine=0, n_selected=1, mode="representation"):
        super().__init__(mode)
        self.n_byzantine = check_number("n_byzantine", n_byzantine, low=0, integer=True)
        self.n_selected = check_number("n_selected", n_selected, low=1, integer=True)

    def build(self, num_tasks):
        super().build(num_tasks)
        if num_tasks < self.n_byzantine + 3:
            raise ValueError(f"Krum needs at least n_byzantine + 3 = {self.n_byzantine + 3} tasks "
                             f"(a score sums T - n_byzantine - 2 >= 1 distances). Received: "
                             f"{num_tasks} tasks with n_byzantine={self.n_byzantine}")
        if self.n_selected > num_tasks:
            raise ValueError(f"`n_selected` must be at most the number of tasks, {num_tasks}. "
                             f"Received: n_selected={self.n_selected}")
        return self

    def coefficients(self, gram, losses):
        t = self.num_tasks
        g = tf.cast(gram, tf.float64)
        norms = tf.linalg.diag_part(g)
        distances = tf.maximum(norms[:, None] + norms[None, :] - 2 * g, 0.0)
        distances = tf.linalg.set_diag(distances, tf.fill([t], tf.constant(float("inf"), tf.float64)))
        nearest = tf.sort(distances, axis=1)[:, :t - self.n_byzantine - 2]
        chosen = tf.argsort(tf.reduce_sum(nearest, axis=1), stable=True)[:self.n_selected]
        weights = tf.cast(tf.reduce_sum(tf.one_hot(chosen, t, dtype=tf.float64), 0) / self.n_selected,
                          gram.dtype)
        return t * weights, weights

    def get_config(self):
        return {**super().get_config(), "n_byzantine": self.n_byzantine, "n_selected": self.n_selected}
