"""Learning-rate schedules of the papers, as Keras `LearningRateSchedule`s."""

import keras
import numpy as np
import tensorflow as tf


@keras.saving.register_keras_serializable(package="mtl_tf")
class StagedInverseTimeDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Paper 000's scheme: stages of epochs, each starting at its own rate r_s and decayed
    per epoch by 1 / (1 + d_s n), with d_s = r_s / `decay_divisor` and n the epochs done
    within the stage. The paper: Adam, 1e-3 for 25 epochs then 1e-5 for 25, d = r / 25.

    (With d = r / 25 the decay within a stage is tiny, 1 / (1 + 0.001 n) at r = 1e-3; it
    is the text's formula. Old Keras's `decay` argument applied the same formula per
    batch step, which would decay far more; the text says per epoch.)

    Args:
        steps_per_epoch: int. Optimizer steps in one epoch.
        rates: list of float. Each stage's initial rate. Defaults to `(1e-3, 1e-5)`.
        epochs: list of int. Each stage's length in epochs; the last stage's rate holds
            after its end. Defaults to `(25, 25)`.
        decay_divisor: float. d_s = r_s / decay_divisor. Defaults to `25`.

    Example:
    ```python
    from mtl_tf.lr_schedules import StagedInverseTimeDecay
    schedule = StagedInverseTimeDecay(steps_per_epoch=600)
    assert abs(float(schedule(600 * 25)) - 1e-5) < 1e-12          # stage 2 starts
    assert abs(float(schedule(600 * 3)) - 1e-3 / (1 + 4e-5 * 3)) < 1e-12
    ```
    """

    def __init__(self, steps_per_epoch, rates=(1e-3, 1e-5), epochs=(25, 25), decay_divisor=25.0):
        if not isinstance(steps_per_epoch, int) or steps_per_epoch < 1:
            raise ValueError(f"`steps_per_epoch` must be a positive integer. Received: "
                             f"steps_per_epoch={steps_per_epoch!r}")
        rates, epochs = [float(r) for r in rates], [int(e) for e in epochs]
        if not rates or len(rates) != len(epochs) or min(rates) <= 0 or min(epochs) < 1:
            raise ValueError(f"`rates` and `epochs` must be equally long lists of positive "
                             f"numbers. Received: rates={rates!r}, epochs={epochs!r}")
        if decay_divisor <= 0:
            raise ValueError(f"`decay_divisor` must be positive. Received: decay_divisor={decay_divisor!r}")
        self.steps_per_epoch = steps_per_epoch
        self.rates, self.epochs = rates, epochs
        self.decay_divisor = float(decay_divisor)

    def rate_at_epoch(self, epoch):
        """The rate during (0-based) `epoch`, in NumPy: the formula, for plots and tests."""
        starts = np.cumsum([0] + self.epochs[:-1])
        stage = int(np.searchsorted(starts, epoch, side="right") - 1)
        rate = self.rates[stage]
        return rate / (1.0 + rate / self.decay_divisor * (epoch - starts[stage]))

    def __call__(self, step):
        epoch = tf.cast(step, tf.int64) // self.steps_per_epoch
        starts = tf.constant(np.cumsum([0] + self.epochs[:-1]), tf.int64)
        stage = tf.reduce_sum(tf.cast(starts <= epoch, tf.int32)) - 1
        rate = tf.gather(tf.constant(self.rates, tf.float32), stage)
        done = tf.cast(epoch - tf.gather(starts, stage), tf.float32)
        return rate / (1.0 + rate / self.decay_divisor * done)

    def get_config(self):
        return {"steps_per_epoch": self.steps_per_epoch, "rates": list(self.rates),
                "epochs": list(self.epochs), "decay_divisor": self.decay_divisor}


def plot_schedule(schedule, total_epochs, path, title="Learning-rate scheme"):
    """Paper 000's Figure 4: the rate of each epoch, on a log scale. Writes a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mtl_tf.data.paths import atomic_path

    epochs = np.arange(total_epochs)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.step(epochs + 1, [schedule.rate_at_epoch(e) for e in epochs], where="post")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path
