"""The fused batch norm against NumPy's batch norm (the formula) and against Keras's layer.
The kernel is asked for (`fused=True`), so it is tested on machines where the default
would not take it."""

import numpy as np
import pytest
import keras
import tensorflow as tf

import mtl_tf.layers
from mtl_tf.layers import BatchNormalization

EPS, MOMENTUM = 1e-3, 0.9


def _numpy_batch_norm(x, gamma, beta, eps=EPS):
    x = x.astype(np.float64)
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))  # biased, as Keras
    return gamma * (x - mean) / np.sqrt(var + eps) + beta, mean, var


def _inputs(shape=(6, 5, 4, 3), seed=0):
    rng = np.random.default_rng(seed)
    # Channels of very different location and scale.
    return (rng.normal(size=shape) * np.array([0.01, 1.0, 300.0]) + np.array([5.0, -2.0, 1e3])).astype("float32")


def _layer(cls=BatchNormalization, channels=3, **kwargs):
    if cls is BatchNormalization:
        kwargs = {"fused": True, **kwargs}
    layer = cls(momentum=MOMENTUM, epsilon=EPS, **kwargs)
    layer.build((None, 5, 4, channels))
    rng = np.random.default_rng(1)
    if layer.scale:
        layer.gamma.assign(rng.uniform(0.5, 2.0, channels))
    if layer.center:
        layer.beta.assign(rng.normal(size=channels))
    layer.moving_mean.assign(rng.normal(size=channels))
    layer.moving_variance.assign(rng.uniform(0.5, 2.0, channels))
    return layer


def test_training_output_and_moving_statistics_follow_the_formula():
    x = _inputs()
    layer = _layer()
    gamma, beta = layer.gamma.numpy(), layer.beta.numpy()
    old_mean, old_var = layer.moving_mean.numpy(), layer.moving_variance.numpy()
    want, mean, var = _numpy_batch_norm(x, gamma, beta)
    got = layer(x, training=True).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(layer.moving_mean.numpy(), MOMENTUM * old_mean + (1 - MOMENTUM) * mean,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.moving_variance.numpy(), MOMENTUM * old_var + (1 - MOMENTUM) * var, rtol=1e-4)


def test_gradients_equal_those_of_the_formula_written_out():
    x = tf.constant(_inputs())
    layer = _layer()
    upstream = tf.constant(np.random.default_rng(2).normal(size=x.shape).astype("float32"))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        fused = tf.reduce_sum(layer(x, training=True) * upstream)
        mean = tf.reduce_mean(x, axis=(0, 1, 2))
        var = tf.reduce_mean(tf.square(x - mean), axis=(0, 1, 2))
        plain = tf.reduce_sum((layer.gamma * (x - mean) / tf.sqrt(var + EPS) + layer.beta) * upstream)
    for target in (x, layer.gamma, layer.beta):
        got, want = tape.gradient(fused, target), tape.gradient(plain, target)
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=2e-3, atol=2e-4 * np.abs(want.numpy()).max())


@pytest.mark.parametrize("options", [{}, {"center": False}, {"scale": False}, {"center": False, "scale": False}])
def test_it_trains_and_infers_as_keras_batch_norm(options):
    x = _inputs()
    ours, theirs = _layer(**options), _layer(keras.layers.BatchNormalization, **options)
    for _ in range(3):
        np.testing.assert_allclose(ours(x, training=True).numpy(), theirs(x, training=True).numpy(),
                                   rtol=1e-4, atol=1e-4)
    for a, b in zip(ours.weights, theirs.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, err_msg=a.path)
    np.testing.assert_allclose(ours(x, training=False).numpy(), theirs(x, training=False).numpy(),
                               rtol=1e-5, atol=1e-6)


def test_one_value_per_channel_and_other_shapes_take_a_path_that_matches_keras():
    # n = 1: the kernel's Bessel factor is 1, the variance 0. (Of modest size: the output is
    # then beta, which the kernel reaches through x gamma / sqrt(epsilon) to float rounding.)
    one = np.random.default_rng(4).normal(size=(1, 1, 1, 3)).astype("float32")
    ours, theirs = _layer(), _layer(keras.layers.BatchNormalization)
    np.testing.assert_allclose(ours(one, training=True).numpy(), theirs(one, training=True).numpy(), atol=1e-5)
    np.testing.assert_allclose(ours.moving_variance.numpy(), theirs.moving_variance.numpy(), rtol=1e-6)
    flat = np.random.default_rng(3).normal(size=(16, 3)).astype("float32")  # 2-D: Keras's own path
    ours, theirs = BatchNormalization(fused=True), keras.layers.BatchNormalization()
    np.testing.assert_allclose(ours(flat, training=True).numpy(), theirs(flat, training=True).numpy(), rtol=1e-6)
    frozen = _layer()
    frozen.trainable = False  # a frozen layer normalises with its moving statistics, as Keras's
    mean, var = frozen.moving_mean.numpy(), frozen.moving_variance.numpy()
    want = frozen.gamma.numpy() * (one - mean) / np.sqrt(var + EPS) + frozen.beta.numpy()
    np.testing.assert_allclose(frozen(one, training=True).numpy(), want, rtol=1e-5)
    np.testing.assert_array_equal(frozen.moving_mean.numpy(), mean)


def test_mixed_precision_normalises_in_float32_and_returns_float16():
    x = _inputs()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        ours, theirs = _layer(), _layer(keras.layers.BatchNormalization)
        got, want = ours(x.astype("float16"), training=True), theirs(x.astype("float16"), training=True)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert got.dtype == tf.float16 and ours.moving_mean.dtype == "float32"
    np.testing.assert_allclose(got.numpy().astype("float32"), want.numpy().astype("float32"), rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(ours.moving_variance.numpy(), theirs.moving_variance.numpy(), rtol=1e-3)


def test_a_model_with_it_saves_and_loads(tmp_path):
    inputs = keras.Input((5, 4, 3))
    model = keras.Model(inputs, BatchNormalization(momentum=0.7, fused=True)(inputs))
    model.layers[-1](_inputs(), training=True)  # moves the statistics away from their start
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert type(loaded.layers[-1]) is BatchNormalization and loaded.layers[-1].momentum == 0.7
    assert loaded.layers[-1].fused is True
    np.testing.assert_allclose(loaded.predict(_inputs(), verbose=0), model.predict(_inputs(), verbose=0), rtol=1e-6)


def test_fused_false_is_keras_batch_norm_op_for_op(monkeypatch):
    x = _inputs()
    ours, theirs = _layer(fused=False), _layer(keras.layers.BatchNormalization)
    np.testing.assert_array_equal(ours(x, training=True).numpy(), theirs(x, training=True).numpy())
    np.testing.assert_array_equal(ours.moving_variance.numpy(), theirs.moving_variance.numpy())


@pytest.mark.parametrize("vendor, flags, isa, expected", [
    ("GenuineIntel", ["avx2", "avx512f"], "", True),
    ("GenuineIntel", ["avx2", "avx512f"], "AVX2", False),  # measured 0.91x there
    ("GenuineIntel", ["avx2"], "", False),
    ("AuthenticAMD", ["avx2", "avx512f"], "AVX2", True),  # measured 1.06x there
    ("AuthenticAMD", ["avx2"], "", True),
    ("AuthenticAMD", ["avx2"], "SSE41", False),
    ("", [], "", False),  # no /proc/cpuinfo: Keras's path
])
def test_the_default_follows_the_cpu_and_the_isa_oneDNN_is_held_to(monkeypatch, vendor, flags, isa, expected):
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU decides for the kernel")
    monkeypatch.setattr(mtl_tf.layers, "cpu_vendor", lambda: vendor)
    monkeypatch.setattr(mtl_tf.layers, "cpu_flags", lambda: flags)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
    mtl_tf.layers.fused_kernel_pays.cache_clear()
    try:
        assert mtl_tf.layers.fused_kernel_pays() is expected
    finally:
        mtl_tf.layers.fused_kernel_pays.cache_clear()


def test_the_default_takes_keras_path_where_the_kernel_does_not_pay(monkeypatch):
    x = _inputs()
    monkeypatch.setattr(mtl_tf.layers, "fused_kernel_pays", lambda: False)
    ours, theirs = _layer(fused=None), _layer(keras.layers.BatchNormalization)
    np.testing.assert_array_equal(ours(x, training=True).numpy(), theirs(x, training=True).numpy())
    with pytest.raises(ValueError, match=r"fused='yes'"):
        BatchNormalization(fused="yes")
