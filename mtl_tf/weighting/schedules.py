"""Epoch schedules of paper 001 (Belharbi et al., ESANN 2016, Section 3.2).

Tasks are split into main tasks, weighted lambda_s(t), and secondary tasks, each weighted
lambda_r(t) = 1 - lambda_s(t) (the paper gives every reconstruction the same lambda_r),
where t is the epoch (0-based) and T the number of epochs:

- stairs_t1: lambda_s = 0 for t < t1, then 1 (classic pre-training);
- lin: lambda_s = t / (T - 1), from 0 at the first epoch to 1 at the last;
- lin_t1: lambda_s = t / t1 until t1, then 1;
- exp_sigma: lambda_r = exp(-t / sigma), lambda_s = 1 - lambda_r.

The figure defining the curves did not survive the text copy; these follow the text:
weights in [0, 1], summing to 1, the secondary task first, the main task last.
"""

import warnings

import tensorflow as tf

from mtl_tf.weighting.base import Weighting, check_number, register


class _Schedule(Weighting):
    """Args:
        main: list of int. Indices of the main tasks (the rest are secondary).
            Defaults to `[0]`.
    """

    def __init__(self, main=(0,)):
        super().__init__()
        if not isinstance(main, (list, tuple)) or not all(
                isinstance(i, int) and not isinstance(i, bool) for i in main):
            raise ValueError(f"`main` must be a list of task indices. Received: main={main!r}")
        self.main = list(main)

    def build(self, num_tasks):
        super().build(num_tasks)
        if not self.main or any(not 0 <= i < num_tasks for i in self.main):
            raise ValueError(f"`main` must list task indices in [0, {num_tasks}). "
                             f"Received: main={list(self.main)!r}")
        return self

    def lambda_s(self, epoch):
        raise NotImplementedError

    def loss_weights(self, losses):
        lam = tf.cast(self.lambda_s(tf.cast(self.epoch, tf.float32)), tf.float32)
        is_main = tf.constant([i in self.main for i in range(self.num_tasks)])
        return tf.where(is_main, lam, 1.0 - lam)

    def get_config(self):
        return {"main": list(self.main)}


def _positive(name, value):
    return check_number(name, value, low=0, low_open=True)


class _UntilT1(_Schedule):
    """A schedule that reaches lambda_s = 1 at epoch `t1`."""

    def __init__(self, t1, main=(0,)):
        super().__init__(main)
        self.t1 = _positive("t1", t1)

    def get_config(self):
        return {**super().get_config(), "t1": self.t1}


@register("stairs_t1")
class Stairs(_UntilT1):
    """`stairs_t1`: secondary only before epoch `t1`, main only from `t1` on."""

    def lambda_s(self, epoch):
        return tf.where(epoch < self.t1, 0.0, 1.0)


@register("lin")
class Linear(_Schedule):
    """`lin`: lambda_s rises linearly from 0 at epoch 0 to 1 at the last epoch."""

    def __init__(self, epochs, main=(0,)):
        super().__init__(main)
        self.epochs = check_number("epochs", epochs, low=1, integer=True)

    def lambda_s(self, epoch):
        return tf.minimum(epoch / max(self.epochs - 1, 1), 1.0)

    def check_run_length(self, epochs):
        if epochs != self.epochs:
            warnings.warn(f"The `lin` schedule was made for epochs={self.epochs} but the run ends "
                          f"after epoch {epochs}: lambda_s reaches 1 at epoch {self.epochs - 1} "
                          f"(0-based), " + ("then stays there." if epochs > self.epochs else
                                            f"and is {min((epochs - 1) / max(self.epochs - 1, 1), 1):.3f} "
                                            f"at the last epoch.") +
                          " Pass lin's `epochs` equal to the run's to span it.", stacklevel=3)

    def get_config(self):
        return {**super().get_config(), "epochs": self.epochs}


@register("lin_t1")
class LinearT1(_UntilT1):
    """`lin_t1`: lambda_s rises linearly from 0 to 1 at epoch `t1`, then stays at 1."""

    def lambda_s(self, epoch):
        return tf.minimum(epoch / self.t1, 1.0)


@register("exp_sigma")
class Exponential(_Schedule):
    """`exp_sigma`: lambda_r = exp(-t / sigma) (paper 001's best: sigma = 40)."""

    def __init__(self, sigma, main=(0,)):
        super().__init__(main)
        self.sigma = _positive("sigma", sigma)

    def lambda_s(self, epoch):
        return 1.0 - tf.exp(-epoch / self.sigma)

    def get_config(self):
        return {**super().get_config(), "sigma": self.sigma}
