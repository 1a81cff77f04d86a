"""An experiment measured and not kept in the package: Keras's Adam with each variable's
update in one TensorFlow kernel. `python -m benchmarks.trainer_variants` measured it on
the all-conv net (after the fused batch norm, 3 rounds each) at 0.95x of Keras's Adam in
one run and 1.08x in another: within this machine's noise, so not shown to help. It stays
here, tested, so the measurement can be repeated on another machine."""

import keras
import tensorflow as tf


def _handle(variable):
    return (variable.value if isinstance(variable, keras.Variable) else variable).handle


@keras.saving.register_keras_serializable(package="mtl_tf_benchmarks")
class FusedAdam(keras.optimizers.Adam):
    """`keras.optimizers.Adam`, each dense float variable's update one kernel
    (TensorFlow's `ResourceApplyAdam`) instead of Keras's ten or so element-wise ops.

    The same update, to float rounding: m += (g - m)(1 - beta_1), v += (g^2 - v)(1 - beta_2),
    w -= lr sqrt(1 - beta_2^t) / (1 - beta_1^t) m / (sqrt(v) + epsilon), with the same
    state variables (a checkpoint of one restores the other) and the same arguments. The
    kernel forms 1 - beta_1 and 1 - beta_2 from float32 betas where Keras subtracts in
    float64: at beta_2 = 0.999 the factor is 1.3e-5 smaller, so the second moments drift
    from Keras's by about that much, relatively.
    AMSGrad and sparse gradients take Keras's own path. On a small convolutional net
    Keras's per-variable ops are a measurable part of a CPU step (`benchmarks/results.md`).

    Example:
    ```python
    import numpy as np
    import keras
    from benchmarks.fused_adam import FusedAdam
    w = keras.Variable(np.ones(3, "float32"))
    FusedAdam(0.1).apply_gradients([(np.ones(3, "float32"), w)])
    np.testing.assert_allclose(w.numpy(), 0.9, rtol=1e-5)  # Adam's first step moves by lr
    ```
    """

    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad or isinstance(gradient, tf.IndexedSlices) or not variable.dtype.is_floating:
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable), m=_handle(self._momentums[index]), v=_handle(self._velocities[index]),
            beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step), lr=tf.cast(learning_rate, dtype),
            beta1=beta_1, beta2=beta_2, epsilon=tf.cast(self.epsilon, dtype), grad=tf.cast(gradient, dtype))
