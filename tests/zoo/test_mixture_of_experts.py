"""MMoE, OMoE, CGC and PLE: the mixtures as their papers write them (recomputed here
from the layers' weights), where the graph cut falls, each task's gradient at the cut
against a plain tape of that task's loss, and bad arguments."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from mtl_tf.gradients import representation_gradients, shared_gradients
from mtl_tf.graph_cut import GraphCut

TASKS = {"a": 3, "b": 2}
RNG = np.random.default_rng(4)
X = RNG.normal(size=(8, 12)).astype("float32")
Y = {"a": RNG.integers(0, 3, 8), "b": RNG.integers(0, 2, 8)}


def _build(name, **kwargs):
    keras.utils.set_random_seed(0)
    return zoo.build(name, tasks=TASKS, input_shape=(12,), experts=3, **kwargs) if name in ("mmoe", "omoe") \
        else zoo.build(name, tasks=TASKS, input_shape=(12,), **kwargs)


def _softmax(v):
    e = np.exp(v - v.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_mmoe_mixes_the_experts_by_each_tasks_softmax_gate():
    """f^k(x) = sum_i softmax(W_k x)_i f_i(x), W_k without bias (the paper's Eq. 5)."""
    model = _build("mmoe")
    experts = np.stack([model.get_layer(f"expert_{i}")(X).numpy() for i in range(3)], axis=1)
    for task in TASKS:
        gate = model.get_layer(f"gate_{task}")
        assert len(gate.weights) == 1  # no bias
        g = _softmax(X @ gate.kernel.numpy())
        mixed = (g[:, :, None] * experts).sum(1)
        np.testing.assert_allclose(model.get_layer(f"tower_{task}")(mixed).numpy(), model(X)[task].numpy(),
                                   rtol=1e-5, atol=1e-6)


def test_omoe_gives_every_tower_the_same_mixture():
    model = _build("omoe")
    mixture = keras.Model(model.input, model.get_layer("mixture").output)(X).numpy()
    for task in TASKS:
        np.testing.assert_allclose(model.get_layer(f"tower_{task}")(mixture).numpy(), model(X)[task].numpy(),
                                   rtol=1e-5, atol=1e-6)


def test_cgc_gates_each_tasks_own_experts_then_the_shared_ones():
    model = _build("cgc", task_experts=2, shared_experts=2)
    shared = [model.get_layer(f"expert_0_shared_{i}")(X).numpy() for i in range(2)]
    for task in TASKS:
        own = [model.get_layer(f"expert_0_{task}_{i}")(X).numpy() for i in range(2)]
        g = _softmax(X @ model.get_layer(f"gate_0_{task}").kernel.numpy())
        mixed = (g[:, :, None] * np.stack(own + shared, axis=1)).sum(1)
        np.testing.assert_allclose(model.get_layer(f"tower_{task}")(mixed).numpy(), model(X)[task].numpy(),
                                   rtol=1e-5, atol=1e-6)


def test_ple_feeds_the_shared_gate_every_expert_of_a_level():
    """Level 0's shared gate mixes a's, b's and the shared experts (in that order); level
    1's shared experts read that mixture, task k's read its own level-0 mixture."""
    model = _build("ple", levels=2)
    level0 = {key: model.get_layer(f"expert_0_{key}_0")(X).numpy() for key in ("a", "b", "shared")}
    streams = {}
    for task in TASKS:
        g = _softmax(X @ model.get_layer(f"gate_0_{task}").kernel.numpy())
        streams[task] = (g[:, :, None] * np.stack([level0[task], level0["shared"]], axis=1)).sum(1)
    g = _softmax(X @ model.get_layer("gate_0_shared").kernel.numpy())
    streams["shared"] = (g[:, :, None] * np.stack([level0["a"], level0["b"], level0["shared"]], axis=1)).sum(1)
    common = model.get_layer("expert_1_shared_0")(streams["shared"]).numpy()
    for task in TASKS:
        own = model.get_layer(f"expert_1_{task}_0")(streams[task]).numpy()
        g = _softmax(streams[task] @ model.get_layer(f"gate_1_{task}").kernel.numpy())
        mixed = (g[:, :, None] * np.stack([own, common], axis=1)).sum(1)
        np.testing.assert_allclose(model.get_layer(f"tower_{task}")(mixed).numpy(), model(X)[task].numpy(),
                                   rtol=1e-5, atol=1e-6)
    assert "gate_1_shared" not in [layer.name for layer in model.layers]  # none at the last level


@pytest.mark.parametrize("name, cut", [
    ("mmoe", ["expert_0", "expert_1", "expert_2"]),
    ("omoe", ["mixture"]),
    ("cgc", ["expert_0_shared_0"]),
    ("ple", ["expert_0_a_0", "expert_0_b_0", "expert_0_shared_0", "expert_1_shared_0"]),
])
def test_each_tasks_gradient_at_the_cut_pushed_into_the_shared_layers_is_its_own(name, cut):
    """One backward pass at the cut, then each task's vector-Jacobian product into the
    shared layers, equals that task's plain tape; the task's own layers get theirs."""
    model = _build(name)
    found = GraphCut.find(model, list(TASKS))
    assert sorted(x._keras_history.operation.name for x in found.cut_tensors) == cut
    with tf.GradientTape(persistent=True) as tape:
        forward = found.forward(tf.constant(X), training=True)
        losses = [tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(Y[t], forward.outputs[t]))
                  for t in TASKS]
        summed = tf.add_n(losses)
    at_cut = representation_gradients(tape, summed, forward.copies, list(TASKS))
    pushed = shared_gradients(tape, forward.z, found.shared_variables, at_cut)
    for i, task in enumerate(TASKS):
        with tf.GradientTape() as plain:
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(Y[task], model(X)[task]))
        own = found.path_variables(task)
        want = plain.gradient(loss, found.shared_variables + own, unconnected_gradients="zero")
        got = list(pushed[i]) + tape.gradient(losses[i], own)
        for v, g, w in zip(found.shared_variables + own, got, want):
            np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-4, atol=1e-7, err_msg=f"{task}: {v.path}")


@pytest.mark.parametrize("name, kwargs, message", [
    ("mmoe", {"experts": 0}, r"experts=0"),
    ("omoe", {"expert_units": ()}, r"expert_units=\(\)"),
    ("cgc", {"shared_experts": 0}, r"shared_experts=0"),
    ("ple", {"levels": 0}, r"levels=0"),
    ("ple", {"task_experts": 1.5}, r"task_experts=1.5"),
    ("mmoe", {"expert": "conv"}, r"expert='conv'"),  # a flat input has no image to convolve
    ("mmoe", {"dropout": 1.0}, r"dropout=1.0"),
])
def test_bad_arguments_name_the_argument(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        zoo.build(name, tasks=TASKS, input_shape=(12,), **kwargs)
