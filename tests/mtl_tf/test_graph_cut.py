"""The cut of a functional model's graph: which layers the tasks share, each task's
gradient at the cut in one backward pass (against separate tapes), and a whole trainer
step through it (against a plain tape of the weighted losses)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from mtl_tf.gradients import MultiTaskParts, representation_gradients
from mtl_tf.graph_cut import GraphCut, find_parts

N = 16


def _gated():
    """A shared layer whose output one task reads beside the next shared layer's (a cut
    of two tensors), and an input-dependent gate only task `a` owns."""
    keras.utils.set_random_seed(1)
    x = keras.Input((6,), name="x")
    h1 = keras.layers.Dense(5, activation="tanh", name="shared_1")(x)
    h2 = keras.layers.Dense(4, activation="tanh", name="shared_2")(h1)
    gate = keras.layers.Dense(3, activation="softmax", name="gate_a")(x)
    a = keras.layers.Dense(3, name="out_a")(keras.layers.Concatenate(name="mix_a")([h2, gate]))
    b = keras.layers.Dense(2, name="out_b")(keras.layers.Concatenate(name="mix_b")([h2, h1]))
    return keras.Model(x, {"a": a, "b": b})


def _batch():
    rng = np.random.default_rng(2)
    return (rng.normal(size=(N, 6)).astype("float32"),
            {"a": rng.integers(0, 3, N), "b": rng.integers(0, 2, N)})


def _xent(labels, logits):
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))


def test_the_cut_is_what_a_shared_layer_computes_and_an_owned_one_reads():
    model = _gated()
    cut = GraphCut.find(model, ["a", "b"])
    names = {n.operation.name for n in cut.shared_nodes}
    assert names == {"shared_1", "shared_2"}
    assert {n.operation.name for n in cut.owned_nodes["a"]} == {"gate_a", "mix_a", "out_a"}
    produced = [x._keras_history.operation.name for x in cut.cut_tensors]
    assert sorted(produced) == ["shared_1", "shared_2"] and sorted(cut.sizes) == [4, 5]
    assert {v.path for v in cut.shared_variables} == {v.path for n in ("shared_1", "shared_2")
                                                      for v in model.get_layer(n).trainable_variables}
    x, _ = _batch()
    out = cut.forward(tf.constant(x)).outputs
    for t, want in model(x).items():
        np.testing.assert_allclose(out[t].numpy(), want.numpy(), rtol=1e-6)


def test_each_tasks_gradient_at_the_cut_equals_its_own_tape():
    model = _gated()
    x, y = _batch()
    cut = GraphCut.find(model, ["a", "b"])
    with tf.GradientTape(persistent=True) as tape:
        forward = cut.forward(tf.constant(x))
        summed = sum(_xent(y[t], forward.outputs[t]) for t in "ab")
    got = representation_gradients(tape, summed, forward.copies, ["a", "b"]).numpy()
    layer = model.get_layer
    # The cut's tensors as constants: each task's loss as a function of what it reads.
    h1 = tf.constant(layer("shared_1")(x))
    h2 = tf.constant(layer("shared_2")(h1))
    for i, t in enumerate("ab"):
        with tf.GradientTape() as own:
            own.watch([h1, h2])
            other = layer("gate_a")(x) if t == "a" else h1
            loss = _xent(y[t], layer(f"out_{t}")(tf.concat([h2, other], axis=1)))
        d_h1, d_h2 = own.gradient(loss, [h1, h2], unconnected_gradients="zero")
        pieces = {x._keras_history.operation.name: g for x, g in
                  zip(cut.cut_tensors, np.split(got[i], np.cumsum(cut.sizes)[:-1], axis=1))}
        np.testing.assert_allclose(pieces["shared_2"], d_h2.numpy(), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(pieces["shared_1"], d_h1.numpy(), rtol=1e-5, atol=1e-7)


def test_a_step_through_the_cut_equals_a_plain_tape_of_the_weighted_losses():
    """MGDA at the cut: the shared weights get the gradient of T sum_t w_t L_t (w the
    min-norm weights of the cut gradients, two tasks' closed form), each task's own
    weights its unweighted gradient."""
    from training import Trainer

    model = _gated()
    x, y = _batch()
    cut = GraphCut.find(model, ["a", "b"])
    with tf.GradientTape(persistent=True) as tape:
        forward = cut.forward(tf.constant(x), training=True)
        losses = [_xent(y[t], forward.outputs[t]) for t in "ab"]
    g = [tf.reshape(tape.gradient(loss, forward.copies[t]), [-1]).numpy() for loss, t in zip(losses, "ab")]
    w1 = np.clip((g[1] - g[0]) @ g[1] / ((g[0] - g[1]) @ (g[0] - g[1])), 0, 1)
    c = 2 * np.array([w1, 1 - w1])
    with tf.GradientTape(persistent=True) as plain:
        out = model(x, training=True)
        losses = [_xent(y[t], out[t]) for t in "ab"]
        weighted = c[0] * losses[0] + c[1] * losses[1]
    want = {}
    for v, grad in zip(cut.shared_variables, plain.gradient(weighted, cut.shared_variables)):
        want[v.path] = grad.numpy()
    for i, t in enumerate("ab"):
        for v, grad in zip(cut.path_variables(t), plain.gradient(losses[i], cut.path_variables(t))):
            want[v.path] = grad.numpy()
    before = {v.path: v.numpy().copy() for v in model.trainable_variables}
    trainer = Trainer(model, weighting="mgda", optimizer=keras.optimizers.SGD(1.0), shuffle=False)
    assert isinstance(trainer.parts, GraphCut)
    trainer.fit(x, y, epochs=1, batch_size=N, verbose=0)
    for v in model.trainable_variables:
        np.testing.assert_allclose(before[v.path] - v.numpy(), want[v.path], rtol=1e-4, atol=1e-6,
                                   err_msg=v.path)


def test_on_hard_sharing_the_cut_is_the_trunks_output():
    model = zoo.build("hard_sharing", tasks={"a": 3, "b": 2}, input_shape=(6,), trunk="dense", units=(8,))
    cut = GraphCut.find(model, ["a", "b"])
    parts = MultiTaskParts.find(model, ["a", "b"])
    assert [x._keras_history.operation.name for x in cut.cut_tensors] == ["trunk"]
    assert [v.path for v in cut.shared_variables] == [v.path for v in parts.shared_variables]
    x, _ = _batch()
    np.testing.assert_allclose(cut.forward(tf.constant(x)).z.numpy(), parts.forward(tf.constant(x)).z.numpy())
    assert isinstance(find_parts(model, ["a", "b"]), MultiTaskParts)  # the named parts first


def test_no_cut_where_one_layers_weights_serve_two_tasks_own_paths():
    """One Dense layer called on both tasks' own branches: its weights are shared but
    no tensor separates them. Without shared weights there is nothing to cut."""
    x = keras.Input((6,))
    shared = keras.layers.Dense(4)(x)
    twice = keras.layers.Dense(3)
    branches = [keras.layers.Dense(4, name=f"own_{t}")(shared) for t in "ab"]
    model = keras.Model(x, {t: twice(h) for t, h in zip("ab", branches)})
    assert GraphCut.find(model, ["a", "b"]) is None
    separate = keras.Model(x, {t: keras.layers.Dense(2)(x) for t in "ab"})
    assert GraphCut.find(separate, ["a", "b"]) is None


@pytest.mark.parametrize("name", ["pcgrad", "db_mtl"])
def test_the_trainer_falls_back_to_each_shared_weights_gradients_without_a_cut(name):
    from training import Trainer

    x = keras.Input((6,))
    shared = keras.layers.Dense(4)(x)
    twice = keras.layers.Dense(3)
    model = keras.Model(x, {t: twice(keras.layers.Dense(4)(shared)) for t in "ab"})
    if name == "db_mtl":
        with pytest.raises(ValueError, match="db_mtl"):
            Trainer(model, weighting=name)
        return
    trainer = Trainer(model, weighting=name)
    assert trainer.parts is None
    xs, y = _batch()
    trainer.fit(xs, {"a": y["a"], "b": y["b"] % 3}, epochs=1, batch_size=N, verbose=0)
