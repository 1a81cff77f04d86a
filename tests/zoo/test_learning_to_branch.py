"""Learning to Branch: a unit's draws against the softmax of its logits (the Gumbel-max
law), its straight-through gradient against the soft sample's, recomputed in NumPy; the
kept tree against the search network's inference; the graph cut at the last layer's
nodes; the search schedule, its resume and a step under MirroredStrategy; bad arguments."""

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from mtl_tf.graph_cut import GraphCut
from training import Trainer
from training.learning_to_branch import BranchSearch, format_tree
from zoo.learning_to_branch import GumbelBranch, branch_units, tree_of

TASKS = {"a": 3, "b": 2, "c": 2}
RNG = np.random.default_rng(8)
X = RNG.normal(size=(16, 6)).astype("float32")
Y = {t: RNG.integers(0, n, 16) for t, n in TASKS.items()}


def _search(**kwargs):
    keras.utils.set_random_seed(0)
    return zoo.build("learning_to_branch", tasks=TASKS, input_shape=(6,), units=(5, 4, 4), seed=3, **kwargs)


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_a_unit_draws_each_parent_as_often_as_the_softmax_of_its_logits_says(scale):
    """argmax(l + Gumbel noise) ~ Categorical(softmax(l)), whatever the temperature; in
    inference each child reads its most probable parent."""
    unit = GumbelBranch(2, temperature=3.0, seed=0, logit_scale=scale)
    parents = [tf.fill([1, 1], float(j)) for j in range(3)]  # a parent's value is its index
    unit(parents)
    logits = np.array([[1.0, 0.0, -1.0], [0.0, 1.5, 0.2]], np.float32)
    unit.logits.assign(logits)
    draws = 4000

    @tf.function
    def chosen():
        return tf.map_fn(lambda _: tf.concat(unit(parents, training=True), axis=1)[0],
                         tf.range(draws), fn_output_signature=tf.float32)

    picks = chosen().numpy().astype(int)  # draws x children
    p = _softmax(scale * logits)
    for c in range(2):
        frequency = np.bincount(picks[:, c], minlength=3) / draws
        assert np.all(np.abs(frequency - p[c]) <= 4 * np.sqrt(p[c] * (1 - p[c]) / draws) + 1e-3), (frequency, p[c])
    inferred = [float(v[0, 0]) for v in unit(parents, training=False)]
    assert inferred == [0.0, 1.0]


@pytest.mark.parametrize("searching", [1.0, 0.0])
def test_a_draw_passes_one_parent_on_and_its_gradient_is_the_soft_samples(searching):
    """Forward: child c is its sampled parent exactly. Backward (straight-through):
    dL/dl_ck = s * sum_j <dL/dchild_c, x_j> soft_cj (delta_jk - soft_ck) / tau, soft the
    Gumbel-softmax of the scaled logits; parents get their children's gradients where
    chosen. In the warm-up (`searching` 0) the logits get none."""
    tau, scale = 2.5, 3.0
    unit = GumbelBranch(4, temperature=tau, seed=5, logit_scale=scale)
    x = [tf.constant(RNG.normal(size=(3, 5)).astype("float32")) for _ in range(3)]
    unit(x)
    logits = RNG.normal(size=(4, 3)).astype("float32") * 0.3
    unit.logits.assign(logits)
    unit.searching.assign(searching)
    upstream = RNG.normal(size=(4, 3, 5)).astype("float32")
    state = unit.seed_generator.state.numpy()
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        children = unit(x, training=True)
        loss = tf.add_n([tf.reduce_sum(child * upstream[c]) for c, child in enumerate(children)])
    got_logits = tape.gradient(loss, unit.logits)
    got_parents = tape.gradient(loss, x)
    unit.seed_generator.state.assign(state)  # the same draw's noise
    u = keras.random.uniform((4, 3), minval=1e-10, maxval=1.0, seed=unit.seed_generator).numpy().astype(np.float64)
    soft = _softmax((scale * logits.astype(np.float64) - np.log(-np.log(u))) / tau)
    pick = soft.argmax(axis=1)
    xs = np.stack([v.numpy() for v in x])
    for c, child in enumerate(children):
        np.testing.assert_array_equal(child.numpy(), xs[pick[c]])
    dw = np.einsum("cbd,jbd->cj", upstream, xs)
    want = scale * np.einsum("cj,cj,cjk->ck", dw, soft, np.eye(3)[None] - soft[:, None, :]) / tau
    np.testing.assert_allclose(got_logits.numpy(), searching * want, rtol=1e-4, atol=1e-5)
    for j in range(3):
        np.testing.assert_allclose(got_parents[j].numpy(), upstream[pick == j].sum(axis=0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("nodes", [None, (1, 2, 3)])
def test_the_kept_tree_computes_what_the_search_network_infers(nodes):
    """With `nodes` (1, 2, 3) layer 1's two nodes both read layer 0's one: no unit there."""
    model = _search(nodes=nodes)
    for unit in branch_units(model):
        unit.logits.assign(RNG.normal(size=unit.logits.shape).astype("float32"))
    logits = {u.name: u.logits.numpy() for u in branch_units(model)}
    assert ("branch_1" in logits) == (nodes is None)
    tree = tree_of(model)
    for task, path in tree.items():  # traced by hand from the heads down
        node = logits[f"branch_head_{task}"][0].argmax()
        want = [node]
        for i in (2, 1):
            node = logits[f"branch_{i}"][node].argmax() if f"branch_{i}" in logits else 0
            want.append(node)
        assert path == tuple(int(n) for n in reversed(want))
    kept = zoo.build("learning_to_branch", tasks=TASKS, input_shape=(6,), units=(5, 4, 4), tree=tree)
    nodes = sorted(layer.name for layer in kept.layers if layer.name.startswith("node_"))
    assert nodes == sorted({f"node_{i}_{p[i]}" for p in tree.values() for i in range(3)})
    for layer in kept.layers:
        if layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    want = model(X, training=False)
    for task, value in kept(X).items():
        np.testing.assert_allclose(value.numpy(), want[task].numpy(), rtol=1e-5, atol=1e-6)
    assert "|" in format_tree(tree)


def test_the_cut_is_the_last_layers_nodes_and_each_tasks_gradient_there_its_own():
    model = _search()
    cut = GraphCut.find(model, list(TASKS))
    assert sorted(c._keras_history.operation.name for c in cut.cut_tensors) == ["node_2_0", "node_2_1", "node_2_2"]
    assert {v.path for v in cut.path_variables("a")} == {
        v.path for n in ("branch_head_a", "head_a") for v in model.get_layer(n).trainable_variables}
    with tf.GradientTape() as tape:
        forward = cut.forward(tf.constant(X))
        summed = tf.add_n([tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
            Y[t], forward.outputs[t], True)) for t in TASKS])
    got = tape.gradient(summed, [forward.copies[t] for t in TASKS])
    nodes = [tf.constant(v) for v in keras.Model(model.input, [c for c in cut.cut_tensors])(X)]
    for t, g in zip(TASKS, got):
        with tf.GradientTape() as own:
            own.watch(nodes)
            feature = model.get_layer(f"branch_head_{t}")(nodes)[0]
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                Y[t], model.get_layer(f"head_{t}")(feature), True))
        want = np.concatenate([d.numpy() for d in own.gradient(loss, nodes, unconnected_gradients="zero")], axis=1)
        np.testing.assert_allclose(g.numpy(), want, rtol=1e-5, atol=1e-7)
    # The kept tree's cut: where the tasks' paths part.
    tree = {"a": (0, 0, 0), "b": (0, 0, 1), "c": (0, 1, 2)}
    kept = zoo.build("learning_to_branch", tasks=TASKS, input_shape=(6,), units=(5, 4, 4), tree=tree)
    produced = sorted(c._keras_history.operation.name for c in GraphCut.find(kept, list(TASKS)).cut_tensors)
    assert produced == ["node_0_0", "node_1_0"]


def test_the_search_warms_up_anneals_and_resumes_to_the_same_weights(tmp_path):
    search = BranchSearch(warmup=1, temperature=6.0, verbose=False)
    assert [search.temperature(e) for e in range(4)] == [6.0, 6.0, 3.0, 2.0]
    model = _search(logit_scale=10.0)
    trainer = Trainer(model, weighting="pcgrad", run_dir=tmp_path / "whole")
    history = trainer.fit(X, Y, epochs=1, batch_size=4, callbacks=[search], verbose=0)
    assert all(np.all(u.logits.numpy() == 0) for u in branch_units(model))  # warm-up: uniform draws
    history = trainer.fit(X, Y, epochs=2, batch_size=4, callbacks=[search], verbose=0)  # 2 more
    assert history.history["temperature"] == [6.0, 3.0]
    assert all(np.abs(u.logits.numpy()).max() > 0 for u in branch_units(model))
    assert search.tree == tree_of(model) and history.history["branch_nodes"][-1] >= 3
    # Cut after 2 epochs, resumed: the draws go on where they stopped.
    cut = _search(logit_scale=10.0)
    Trainer(cut, weighting="pcgrad", run_dir=tmp_path / "cut").fit(
        X, Y, epochs=2, batch_size=4, callbacks=[BranchSearch(1, 6.0, verbose=False)], verbose=0)
    resumed = _search(logit_scale=10.0)
    Trainer(resumed, weighting="pcgrad", run_dir=tmp_path / "cut").fit(
        X, Y, epochs=3, batch_size=4, callbacks=[BranchSearch(1, 6.0, verbose=False)], verbose=0)
    for v, w in zip(model.weights, resumed.weights):
        np.testing.assert_array_equal(v.numpy(), w.numpy(), err_msg=v.path)


_MIRRORED = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
import keras, numpy as np
from tests.zoo.test_learning_to_branch import X, Y, _search
from training import Trainer
from training.learning_to_branch import BranchSearch
with strategy.scope():
    model = _search(logit_scale=10.0)
    trainer = Trainer(model, weighting="pcgrad", optimizer=keras.optimizers.SGD(0.5), distribution=strategy)
trainer.fit(tf.data.Dataset.from_tensor_slices((X, Y)).batch(8), epochs=2,
            callbacks=[BranchSearch(0, verbose=False)], verbose=0)
np.savez(sys.argv[1], *[v.numpy() for v in model.weights])
"""


@pytest.mark.slow
def test_two_replicas_draw_the_same_trees_and_step_as_one_device(tmp_path):
    out = tmp_path / "mirrored.npz"
    result = subprocess.run([sys.executable, "-c", _MIRRORED, str(out)], cwd=Path(__file__).resolve().parents[2],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = np.load(out)
    model = _search(logit_scale=10.0)
    Trainer(model, weighting="pcgrad", optimizer=keras.optimizers.SGD(0.5), shuffle=False).fit(
        X, Y, epochs=2, batch_size=8, callbacks=[BranchSearch(0, verbose=False)], verbose=0)
    for i, v in enumerate(model.weights):
        np.testing.assert_allclose(saved[f"arr_{i}"], v.numpy(), rtol=2e-4, atol=2e-6, err_msg=v.path)
    assert any(np.abs(u.logits.numpy()).max() > 1e-3 for u in branch_units(model))


@pytest.mark.parametrize("kwargs, message", [
    ({"nodes": (2, 2)}, "`nodes` must be 3 positive integers"),
    ({"nodes": (2, 0, 2)}, "`nodes` must be 3"),
    ({"temperature": 0}, "`temperature` must be a positive number"),
    ({"logit_scale": -1.0}, "`logit_scale` must be a positive number"),
    ({"tree": {"a": (0, 0, 0), "b": (0, 0, 0)}}, "`tree` must map every task"),
    ({"tree": {"a": (0, 0), "b": (0, 0, 0), "c": (0, 0, 0)}}, r"`tree\['a'\]` must be 3 node indices"),
    ({"tree": {"a": (0, 0, 0), "b": (0, 1, 1), "c": (1, 1, 2)}}, "node 1 of layer 1 two parents"),
])
def test_bad_arguments_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        zoo.build("learning_to_branch", tasks=TASKS, input_shape=(6,), units=(5, 4, 4), **kwargs)


def test_the_schedule_refuses_bad_arguments_and_a_model_without_units():
    with pytest.raises(ValueError, match="`warmup` must be an integer >= 0"):
        BranchSearch(warmup=-1)
    with pytest.raises(ValueError, match="`temperature` must be a positive number"):
        BranchSearch(temperature=0.0)
    model = zoo.build("hard_sharing", tasks=TASKS, input_shape=(6,), trunk="dense", units=(4,))
    with pytest.raises(ValueError, match="needs a Learning to Branch search network"):
        Trainer(model).fit(X, Y, epochs=1, batch_size=8, callbacks=[BranchSearch()], verbose=0)
    with pytest.raises(ValueError, match="not a Learning to Branch search network"):
        tree_of(model)
