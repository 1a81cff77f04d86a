"""Priority-Constrained Descent (Varam and AlHajri, TMLR 2026)."""

import numpy as np
import tensorflow as tf

from mtl_tf.weighting.base import check_number, register, state_variable
from mtl_tf.weighting.dual_cone import nonnegative_qp
from mtl_tf.weighting.gradient_level import GradientLevel

_RIDGE = 1e-12  # of each secondary's own squared norm, as in `dual_cone`
_FEASIBLE = 1e-9  # the authors' KKT tolerance, of the largest squared norm
_VANISHED = 10 * np.finfo(np.float32).eps  # TorchJD's test that the direction is 0


@register("pcd")
class PCD(GradientLevel):
    """Priority-Constrained Descent (Varam and AlHajri, "Not All Objectives Are Born
    Equal: Priority-Constrained Descent for Hierarchical Multi-Objective Optimization",
    TMLR 2026; TorchJD's `PCD`): the direction closest to the primary task's normalised
    gradient that gives every other task at least a fraction tau of the progress along
    its own (Def. 4.1),

        d~ = argmin_d ||d - g~_1||^2 / 2  s.t.  g~_j . d >= tau_j ||g~_j||^2, j = 2..T,

    on the gradients g~_i = s_i g_i normalised by s_i = 1 / sqrt(v^_i + eps), v^ the
    bias-corrected moving average of ||g_i||^2 (Def. 4.5), then rescaled to the primary
    gradient's norm, d = d~ ||g_1|| / ||d~|| (Algorithm 1). The step's size is the
    primary's, whatever T: it is not multiplied by T.

    The program is solved through its dual, d~ = g~_1 + sum_j mu_j g~_j with
    mu = argmin_{mu >= 0} mu^T G~_ss mu / 2 - b^T mu, b = tau diag(G~_ss) - G~_s1, by the
    Lawson-Hanson active-set method of `dual_cone` (exact; the authors enumerate the
    2^(T-1) working sets, TorchJD runs Goldfarb-Idnani). Cases from the authors' code
    and TorchJD: a zero primary gradient gives a zero step (the average still moves);
    constraints that no direction meets (two opposite secondaries) are dropped for the
    step, d = g_1; a zero secondary constrains nothing; a vanishing d~ gives 0.
    Defaults (tau 0.02, beta 0.999, eps 1e-8) are the paper's and both codes'. The
    primary is task 0 unless `primary` names another.

    Args:
        tau: float in [0, 1], or a list of T - 1 of them (the other tasks, in order).
            Defaults to `0.02`.
        beta: float in [0, 1). Defaults to `0.999`.
        eps: float >= 0. Defaults to `1e-8`.
        primary: int. The primary task's index. Defaults to `0`.
        mode: `"representation"` or `"parameters"`.
    """

    def __init__(self, tau=0.02, beta=0.999, eps=1e-8, primary=0, mode="representation"):
        super().__init__(mode)
        taus = tau if isinstance(tau, (list, tuple)) else [tau]
        for value in taus:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(f"`tau` must be a number in [0, 1] or a list of them. Received: tau={tau!r}")
        # A tuple: tf.Module would wrap a list.
        self.tau = tuple(float(v) for v in tau) if isinstance(tau, (list, tuple)) else float(tau)
        self.beta = float(check_number("beta", beta, low=0, high=1))
        if self.beta == 1:
            raise ValueError(f"`beta` must be below 1 (its bias correction divides by 1 - beta^n). "
                             f"Received: beta={beta!r}")
        self.eps = float(check_number("eps", eps, low=0))
        self.primary = check_number("primary", primary, low=0, integer=True)

    def build(self, num_tasks):
        super().build(num_tasks)
        if self.primary >= num_tasks:
            raise ValueError(f"`primary` must be a task index below {num_tasks}. Received: primary={self.primary}")
        if isinstance(self.tau, tuple) and len(self.tau) != num_tasks - 1:
            raise ValueError(f"`tau` must have one value per task other than the primary, "
                             f"{num_tasks - 1}. Received: tau={list(self.tau)!r}")
        self.average = state_variable(tf.zeros([num_tasks], tf.float64), name="average")
        self.step = state_variable(0, dtype=tf.int64, name="step")
        return self

    def coefficients(self, gram, losses):
        t = self.num_tasks
        order = [self.primary] + [i for i in range(t) if i != self.primary]
        g = tf.cast(gram, tf.float64)
        g = (g + tf.transpose(g)) / 2
        self.step.assign_add(1)
        self.average.assign(self.beta * self.average + (1 - self.beta) * tf.linalg.diag_part(g))
        corrected = self.average / (1 - self.beta ** tf.cast(self.step, tf.float64))
        scale = tf.gather(tf.math.divide_no_nan(tf.ones_like(corrected), tf.sqrt(corrected + self.eps)), order)
        g = tf.gather(tf.gather(g, order), order, axis=1)  # the primary first
        norms = tf.linalg.diag_part(g)
        mu = self._multipliers(scale[:, None] * g * scale[None, :])
        c = tf.concat([[1.0], mu], 0) * scale
        squared = tf.tensordot(c, tf.linalg.matvec(g, c), 1)
        bound = tf.square(tf.reduce_sum(tf.abs(c) * tf.sqrt(tf.maximum(norms, 0.0))))
        c = tf.where(tf.logical_and(norms[0] > 0, squared > _VANISHED * bound),
                     c * tf.sqrt(tf.math.divide_no_nan(norms[0], squared)), tf.zeros_like(c))
        c = tf.cast(tf.gather(c, tf.argsort(order)), gram.dtype)
        return c, c

    def _multipliers(self, g):
        """The dual's mu (T - 1), 0 when no direction meets every constraint."""
        if self.num_tasks == 1:
            return tf.zeros([0], tf.float64)
        secondary = g[1:, 1:]
        diag = tf.linalg.diag_part(secondary)
        b = tf.constant(self.tau, tf.float64) * diag - g[1:, 0]
        largest = tf.reduce_max(tf.linalg.diag_part(g))
        unit = tf.maximum(largest, 1e-300)
        q_matrix = (secondary + _RIDGE * tf.linalg.diag(diag)) / unit
        mu = nonnegative_qp(q_matrix, -b[None] / unit)[0]
        slack = tf.linalg.matvec(secondary, mu) - b
        met = tf.logical_and(tf.reduce_all(slack >= -_FEASIBLE * largest),
                             tf.reduce_all(tf.math.is_finite(mu)))
        return tf.where(tf.logical_and(met, largest > 0), mu, tf.zeros_like(mu))

    def get_config(self):
        tau = list(self.tau) if isinstance(self.tau, tuple) else self.tau
        return {**super().get_config(), "tau": tau, "beta": self.beta, "eps": self.eps,
                "primary": self.primary}
