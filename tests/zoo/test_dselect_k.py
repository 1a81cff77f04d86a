"""DSelect-k's gate against NumPy written from the paper: the smooth step, the binary
selectors, their softmax combination, the regularisers; it picks exactly k experts once
the steps saturate."""

import keras
import numpy as np
import pytest

import zoo
from zoo.dselect_k import DSelectKGate

RNG = np.random.default_rng(8)


def _step(t, gamma):
    return np.where(t <= -gamma / 2, 0.0, np.where(t >= gamma / 2, 1.0,
                                                    -2 * t ** 3 / gamma ** 3 + 3 * t / (2 * gamma) + 0.5))


def _selectors(z, experts):
    """r(z)_j = prod_b S(z_b)^{bit} (1 - S(z_b))^{1 - bit}, most significant bit first."""
    bits = z.shape[-1]
    codes = np.array([[(j >> (bits - 1 - b)) & 1 for b in range(bits)] for j in range(experts)])
    return np.prod(np.where(codes == 1, z[..., None, :], 1 - z[..., None, :]), axis=-1)


def _reference(layer, x, gamma):
    """alpha = sum_i softmax(w)_i r(S(z_i)) with z, w from the layer's own weights."""
    if layer.gate == "per_example":
        z = x @ layer.z_layer.kernel.numpy() + layer.z_layer.bias.numpy()
        w = x @ layer.w_layer.kernel.numpy() + layer.w_layer.bias.numpy()
        z = z.reshape(len(x), layer.k, layer.bits)
    else:
        z = np.broadcast_to(layer.z_logits.numpy(), (len(x), layer.k, layer.bits))
        w = np.broadcast_to(layer.w_logits.numpy(), (len(x), layer.k))
    r = _selectors(_step(z, gamma), layer.experts)
    soft = np.exp(w) / np.exp(w).sum(-1, keepdims=True)
    return (soft[..., None] * r).sum(1), r


def test_the_smooth_step_is_the_papers_cubic():
    t = np.linspace(-1.5, 1.5, 31).astype("float32")
    for gamma in (0.5, 1.0, 2.0):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(zoo.dselect_k.smooth_step(t, gamma)),
                                   _step(t, gamma), atol=1e-6)


@pytest.mark.parametrize("gate", ["per_example", "static"])
@pytest.mark.parametrize("experts, k", [(8, 2), (5, 3), (4, 1)])
def test_the_gate_combines_k_binary_selectors(gate, experts, k):
    keras.utils.set_random_seed(2)
    gamma = 1.0
    layer = DSelectKGate(experts, k, gamma, gate)
    x = RNG.normal(size=(6, 7)).astype("float32")
    got = keras.ops.convert_to_numpy(layer(x))
    # Away from the start, so the steps are not all near 1/2.
    for v in layer.trainable_weights:
        v.assign(RNG.normal(size=v.shape).astype("float32") * 0.8)
    got = keras.ops.convert_to_numpy(layer(x))
    want, r = _reference(layer, x, gamma)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    if experts == 2 ** layer.bits:
        np.testing.assert_allclose(got.sum(1), 1.0, rtol=1e-5)


def test_saturated_steps_pick_exactly_the_coded_experts():
    layer = DSelectKGate(8, 2, 1.0, "static")
    layer(np.zeros((1, 3), "float32"))
    layer.z_logits.assign(np.array([[5.0, -5.0, 5.0], [-5.0, 5.0, 5.0]], "float32"))  # codes 101, 011
    layer.w_logits.assign(np.array([0.0, np.log(3.0)], "float32"))
    got = keras.ops.convert_to_numpy(layer(np.zeros((2, 3), "float32")))
    want = np.zeros(8)
    want[5], want[3] = 0.25, 0.75
    np.testing.assert_allclose(got, [want, want], atol=1e-7)


def test_the_regularisers_are_added_in_training_only():
    """lambda * mean_b sum_i H(r_i) and, with 6 experts (not a power of two),
    mean_b sum_i 1 / sum_j r_ij."""
    keras.utils.set_random_seed(3)
    layer = DSelectKGate(6, 2, 1.0, "per_example", entropy_weight=0.1)
    x = RNG.normal(size=(4, 5)).astype("float32")
    layer(x)
    assert not layer.losses
    for v in layer.trainable_weights:
        v.assign(RNG.normal(size=v.shape).astype("float32") * 0.3)
    layer(x, training=True)
    _, r = _reference(layer, x, 1.0)
    entropy = 0.1 * (-(r * np.log(r + 1e-6)).sum(axis=(1, 2))).mean()
    reach = (1 / (r.sum(-1) + 1e-6)).sum(1).mean()
    np.testing.assert_allclose(sorted(float(v) for v in layer.losses), sorted([entropy, reach]), rtol=1e-4)


@pytest.mark.parametrize("kwargs, message", [
    ({"k": 9}, r"k=9"), ({"k": 0}, r"k=0"), ({"experts": 0}, r"experts=0"), ({"gamma": 0}, r"gamma=0"),
    ({"gate": "dense"}, r"gate='dense'"), ({"entropy_weight": -1.0}, r"entropy_weight=-1.0"),
])
def test_bad_arguments_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        zoo.build("dselect_k", tasks={"a": 2, "b": 2}, input_shape=(5,), **kwargs)
