"""STCH, smooth Tchebycheff scalarisation (Lin et al., ICML 2024)."""

import warnings

import tensorflow as tf

from mtl_tf.weighting.base import check_number, register, state_variable
from mtl_tf.weighting.scalarization import Scalarization, positive, safe_log


@register("stch")
class STCH(Scalarization):
    """Smooth Tchebycheff scalarisation (Lin, Zhang, Yang, Liu, Wang and Zhang, ICML 2024):
    mu log sum_t exp(lambda_t (f_t - z_t) / mu), a smooth maximum of the tasks' distances
    to a reference point z, which tends to their largest as mu -> 0.

    For multi-task learning this follows the authors' code (`Xi-L/STCH`, the same as
    LibMTL's `STCH.py`): f_t = log L_t, lambda_t = 1, z_t = log of the "nadir" L_t, the
    mean loss of each task over epoch `warmup_epochs` (0-based), frozen at its end.
    Until then (epochs 0 to `warmup_epochs`) the loss is the sum of log-losses; from the
    next epoch on it is T mu logsumexp((log L_t - log nadir_t) / mu) (the factor T is
    the authors'). Its gradient is T sum_t softmax(y / mu)_t grad L_t / L_t: the task
    farthest above its nadir gets the most weight.

    A task with loss 0 in a batch is left out of that step (the authors add 1e-20 inside
    the log, which gives such a task log 1e-20 and weight ~0), and a task whose nadir
    is 0 is left out of the smooth maximum.

    Args:
        mu: float. The smoothing temperature. Defaults to `1.0` (LibMTL's and the
            authors' MTL default; the paper tries 0.01 to 1).
        warmup_epochs: int. The epoch whose mean losses become the nadir point.
            Defaults to `4` (the same source).
    """

    def __init__(self, mu=1.0, warmup_epochs=4):
        super().__init__()
        self.mu = float(check_number("mu", mu, low=0, low_open=True))
        self.warmup_epochs = check_number("warmup_epochs", warmup_epochs, low=0, integer=True)

    def build(self, num_tasks):
        super().build(num_tasks)
        self.nadir = state_variable(tf.zeros([num_tasks]), name="nadir")
        self.loss_sum = state_variable(tf.zeros([num_tasks]), name="loss_sum")
        self.steps = state_variable(0.0, name="steps")
        return self

    def scalarize(self, losses):
        def smooth_max():
            present = tf.logical_and(positive(losses), self.nadir > 0)
            y = safe_log(losses) - safe_log(self.nadir)
            y = tf.where(present, y / self.mu, tf.fill(tf.shape(y), -float("inf")))
            value = self.num_tasks * self.mu * tf.reduce_logsumexp(y)
            return tf.where(tf.reduce_any(present), value, 0.0)

        return tf.cond(self.epoch > self.warmup_epochs, smooth_max,
                       lambda: tf.reduce_sum(safe_log(losses)))

    def observe(self, losses):
        collecting = tf.cast(self.epoch == self.warmup_epochs, tf.float32)
        self.loss_sum.assign_add(collecting * tf.stop_gradient(losses))
        self.steps.assign_add(collecting)

    def on_epoch_end(self, epoch):
        if epoch == self.warmup_epochs:
            self.nadir.assign(self.loss_sum / tf.maximum(self.steps, 1.0))

    def check_run_length(self, epochs):
        if epochs <= self.warmup_epochs + 1:
            warnings.warn(f"STCH minimises the sum of log-losses until epoch {self.warmup_epochs + 1} "
                          f"(warmup_epochs={self.warmup_epochs}, 0-based) and starts after it, but the "
                          f"run ends at epoch {epochs}: it never starts.", stacklevel=3)

    def get_config(self):
        return {"mu": self.mu, "warmup_epochs": self.warmup_epochs}
