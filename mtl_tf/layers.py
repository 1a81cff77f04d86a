"""Layers: Keras's own, computed by fewer TensorFlow kernels where that is faster."""

import functools
import os

import keras
import tensorflow as tf


@functools.cache
def fused_kernel_pays():
    """Whether `FusedBatchNormV3` trains faster than Keras's batch-norm ops here. Measured
    on the all-conv net (`benchmarks/trainer_variants*.md`): on an Intel Xeon, 1.37x and
    1.41x (two runs) with oneDNN running AVX-512 and 0.91x with oneDNN held to AVX2
    (`ONEDNN_MAX_CPU_ISA=AVX2`; its batch-norm primitive then takes 3.3x as long); on an AMD
    EPYC held to AVX2, 1.06x (`benchmarks/isa/amd-avx2-trainer-variants`). So: on a GPU, on
    an AMD x86 CPU, and on an Intel one with AVX-512 that oneDNN is not held back from; not
    on an Intel CPU without it, nor elsewhere (ARM: unmeasured, Keras's path)."""
    if tf.config.list_physical_devices("GPU"):
        return True
    isa = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").upper()
    held = isa.startswith(("SSE", "AVX2")) or isa == "AVX"
    if cpu_vendor() == "AuthenticAMD":
        return not held or isa.startswith("AVX2")  # measured down to AVX2
    return not held and "avx512f" in cpu_flags()


def _cpuinfo(field):
    """The first `field` line's value in `/proc/cpuinfo`, or "" where that cannot be read."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.split(":", 1)[0].strip() == field), "")
    except OSError:
        return ""


def cpu_flags():
    """The CPU's feature flags (`/proc/cpuinfo`), or [] where that cannot be read."""
    return _cpuinfo("flags").split()


def cpu_vendor():
    """The CPU's vendor (`GenuineIntel`, `AuthenticAMD`...), or "" where it cannot be read."""
    return _cpuinfo("vendor_id")


@keras.saving.register_keras_serializable(package="mtl_tf")
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization`, trained by TensorFlow's fused kernel where that is
    faster (`fused=None`, the default: `fused_kernel_pays()`; `True` or `False` decide).

    Keras 3 normalises a training batch with about a dozen element-wise ops (the moments,
    then the affine normalisation) and as many again in their gradient; TensorFlow's
    `FusedBatchNormV3` does both passes in one kernel and its gradient in another (oneDNN's
    on x86). On the all-conv net, element-wise work (batch norm the most of it) was 47% of a
    CPU training step before, 21% with the fused kernel (`benchmarks/results.md`). Everything else is Keras's layer: the same arguments (and
    `fused`), variables, checkpoints, config and inference path.

    The same computation, to float rounding: y = gamma (x - mean) / sqrt(var + epsilon) +
    beta with the batch's biased variance, and the moving statistics updated as Keras
    updates them, moving = momentum moving + (1 - momentum) batch statistic, with the biased
    variance too (the kernel returns it Bessel-corrected by n / max(n - 1, 1), which is
    undone). The kernel applies only to a trainable layer in training on a 4-D float input
    normalised over its last axis, without a mask, renorm or synchronised statistics; every
    other case takes Keras's own path.

    Example:
    ```python
    import numpy as np
    from mtl_tf.layers import BatchNormalization
    x = np.random.default_rng(0).normal(2.0, 3.0, (8, 4, 4, 3)).astype("float32")
    y = BatchNormalization()(x, training=True).numpy()
    np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    ```
    """

    def __init__(self, *args, fused=None, **kwargs):
        super().__init__(*args, **kwargs)
        if fused not in (None, True, False):
            raise ValueError(f"`fused` must be None, True or False. Received: fused={fused!r}")
        self.fused = fused

    def get_config(self):
        return {**super().get_config(), "fused": self.fused}

    def _fused(self, inputs, training, mask):
        kernel = fused_kernel_pays() if self.fused is None else self.fused
        return (kernel and training and self.trainable and mask is None and not self.renorm and not self.synchronized
                and len(inputs.shape) == 4 and self.axis in (-1, 3)
                and keras.backend.standardize_dtype(inputs.dtype) in ("float16", "bfloat16", "float32"))

    def call(self, inputs, training=None, mask=None):
        if not self._fused(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        inputs = tf.cast(inputs, tf.float32)  # as Keras: the statistics in float32
        channels = inputs.shape[-1]
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels], tf.float32)
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels], tf.float32)
        outputs, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=inputs, scale=gamma, offset=beta, mean=tf.constant([], tf.float32),
            variance=tf.constant([], tf.float32), epsilon=self.epsilon, exponential_avg_factor=1.0,
            data_format="NHWC", is_training=True)
        n = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), tf.float32)
        variance = variance * tf.maximum(n - 1.0, 1.0) / n
        momentum = tf.cast(self.momentum, tf.float32)
        self.moving_mean.assign(tf.cast(self.moving_mean, tf.float32) * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(
            tf.cast(self.moving_variance, tf.float32) * momentum + variance * (1.0 - momentum))
        return tf.cast(outputs, self.compute_dtype)
