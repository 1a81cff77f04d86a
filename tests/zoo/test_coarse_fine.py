"""Paper 004's coarse/fine nets: where the concatenation reads from, the gradient through
it (or not), shared against independent convolutions, parameter counts; the hierarchy
data and its checks, CIFAR-100 in its real format."""

import pickle

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from mtl_tf.data import check_hierarchy, cifar100_names, load_hierarchy
from zoo.coarse_fine import ARCHITECTURES

SMALL = {"tasks": {"fine": 10, "coarse": 4}, "input_shape": (28, 28, 1), "conv_filters": ((4, 4), (8,)),
         "head_units": (16, 12, 8, 8)}


def _build(architecture, **kwargs):
    keras.utils.set_random_seed(0)
    return zoo.build(f"coarse_fine_{architecture}", **{**SMALL, **kwargs})


def _x(n=4, seed=0):
    return np.random.default_rng(seed).random((n, 28, 28, 1)).astype("float32")


def _conv_kernels(model):
    return [w for layer in model.layers if layer.name.startswith("trunk") for w in layer.weights
            if "kernel" in w.path]


def test_every_architecture_is_registered_and_names_its_outputs():
    for architecture in ARCHITECTURES:
        out = _build(architecture)(_x())
        assert sorted(out) == ["coarse", "fine"]
        assert out["fine"].shape == (4, 10) and out["coarse"].shape == (4, 4)


@pytest.mark.parametrize("architecture, reused, reusing", [
    ("reuse_coarse", "coarse", "fine"), ("reuse_fine", "fine", "coarse"),
    ("shared_reuse_coarse", "coarse", "fine"), ("shared_reuse_fine", "fine", "coarse")])
def test_the_concatenation_feeds_the_other_tasks_scores_after_the_second_block(architecture, reused, reusing):
    model = _build(architecture)
    concat = model.get_layer(f"concat_{reused}")
    node = concat._inbound_nodes[0]
    sources = [t._keras_history.operation.name for t in node.arguments.keras_tensors]
    assert sources == [f"head_{reusing}_lower", f"head_{reused}"]
    assert concat.output.shape[-1] == SMALL["head_units"][1] + SMALL["tasks"][reused]
    # Numerically: the reusing head's upper part applied to [lower features, the other
    # task's logits] gives the reusing output.
    x = _x()
    lower = model.get_layer(f"head_{reusing}_lower")
    trunk = model.get_layer("trunk" if architecture.startswith("shared") else f"trunk_{reusing}")
    out = model(x)
    joined = np.concatenate([lower(trunk(x)), out[reused]], axis=-1)
    np.testing.assert_allclose(model.get_layer(f"head_{reusing}_upper")(joined), out[reusing], atol=1e-5)


@pytest.mark.parametrize("stop", [False, True])
def test_the_reusing_tasks_gradient_reaches_the_other_head_unless_stopped(stop):
    model = _build("reuse_coarse", stop_gradient=stop)
    x = _x()
    with tf.GradientTape() as tape:
        fine_loss = tf.reduce_sum(model(x, training=True)["fine"] ** 2)
    coarse_head = model.get_layer("head_coarse").trainable_variables
    grads = tape.gradient(fine_loss, coarse_head)
    norms = [0.0 if g is None else float(tf.norm(g)) for g in grads]
    assert (max(norms) == 0.0) == stop
    # The fine loss never reaches the coarse task's own trunk except through its head.
    if not stop:
        assert max(norms) > 0.0


def test_shared_convolutions_are_one_set_and_independent_nets_share_none():
    shared, independent = _build("shared"), _build("independent")
    x = _x()
    for model, expected in ((shared, 1), (independent, 2)):
        trunks = [layer for layer in model.layers if layer.name.startswith("trunk")]
        assert len(trunks) == expected
        with tf.GradientTape(persistent=True) as tape:
            out = model(x, training=True)
            losses = {t: tf.reduce_sum(out[t] ** 2) for t in out}
        kernels = _conv_kernels(model)
        touched = {t: {id(k) for k, g in zip(kernels, tape.gradient(losses[t], kernels)) if g is not None}
                   for t in losses}
        if expected == 1:  # every shared kernel gets both tasks' gradients
            assert touched["fine"] == touched["coarse"] == {id(k) for k in kernels}
        else:  # each task's loss reaches its own trunk's kernels only
            assert touched["fine"] and touched["coarse"] and not touched["fine"] & touched["coarse"]
            assert touched["fine"] | touched["coarse"] == {id(k) for k in kernels}


def test_paper_widths_keep_the_six_parameter_counts_within_two_percent():
    counts = {a: zoo.build(f"coarse_fine_{a}").count_params() for a in ARCHITECTURES}
    assert (max(counts.values()) - min(counts.values())) / min(counts.values()) < 0.02
    # Independent against shared: one more trunk, counted by hand (3x3 convs, batch norm).
    trunk = (3 * 9 * 64 + 64) + 2 * (64 * 9 * 64 + 64) + (64 * 9 * 128 + 128) + (128 * 9 * 128 + 128)
    trunk += 4 * 64 + 4 * 128
    assert counts["independent"] - counts["shared"] == trunk
    # Reusing the coarse scores adds 20 inputs to the fine head's 256-unit layer.
    assert counts["reuse_coarse"] - counts["independent"] == 20 * 256
    assert counts["reuse_fine"] - counts["independent"] == 100 * 256


def test_the_shared_net_exposes_parts_for_per_task_gradients():
    from mtl_tf.gradients import MultiTaskParts

    assert MultiTaskParts.find(_build("shared"), ["fine", "coarse"]) is not None
    assert MultiTaskParts.find(_build("shared_reuse_fine"), ["fine", "coarse"]) is None


def test_a_model_with_stop_gradient_round_trips(tmp_path):
    model = _build("shared_reuse_fine", stop_gradient=True)
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    x = _x()
    for task in ("fine", "coarse"):
        np.testing.assert_allclose(again(x)[task], model(x)[task], atol=1e-6)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(again(x, training=True)["coarse"])
    assert all(g is None or float(tf.norm(g)) == 0.0
               for g in tape.gradient(loss, again.get_layer("head_fine").trainable_variables))


@pytest.mark.parametrize("kwargs, message", [
    ({"architecture": "reuse_both"}, r"architecture='reuse_both'.*Did you mean"),
    ({"tasks": {"fine": 10}}, r"`tasks` must be two tasks"),
    ({"tasks": {"a": 10, "b": 4}}, r"`fine`='fine'"),
    ({"conv_filters": (8, 16)}, r"conv_filters=\(8, 16\)"),
    ({"head_units": ()}, r"head_units=\(\)"),
    ({"reuse_after": 5}, r"reuse_after=5"),
    ({"dropout": 1.0}, r"dropout=1.0"),
])
def test_bad_arguments_are_refused_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        zoo.build("coarse_fine", **{**SMALL, **kwargs})


def test_hierarchy_check_returns_the_map_and_names_a_broken_class():
    fine = np.array([0, 1, 2, 3, 2, 1])
    coarse = np.array([0, 0, 1, 1, 1, 0])
    assert check_hierarchy(fine, coarse).tolist() == [0, 0, 1, 1]
    with pytest.raises(ValueError, match=r"fine class 2 \('pear'\) lies under coarse classes 0 \('tree'\), 1"):
        check_hierarchy(np.array([0, 2, 2]), np.array([0, 0, 1]), ["apple", "oak", "pear"], ["tree"])
    with pytest.raises(ValueError, match=r"3 fine and 2 coarse"):
        check_hierarchy([0, 1, 2], [0, 1])


def test_the_always_present_hierarchies_are_real_and_consistent():
    images, labels, names = load_hierarchy("fashion_mnist", "test")
    assert images.shape == (10000, 28, 28, 1) and len(names["coarse"]) == 4
    assert labels["coarse"][labels["fine"] == 7].tolist() == [2] * int((labels["fine"] == 7).sum())  # sneaker: footwear
    images, labels, names = load_hierarchy("pooled", "test")
    assert images.shape == (30000, 28, 28, 1) and len(names["fine"]) == 30
    assert np.array_equal(labels["coarse"], labels["fine"] // 10)
    assert np.bincount(labels["coarse"]).tolist() == [10000] * 3


def test_cifar100_hierarchy_reads_the_real_format_with_its_meta_names(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(0)
    fine = rng.integers(0, 100, 12)
    mapping = np.arange(100) // 5  # a fine class under one superclass
    for split in ("train", "test"):
        batch = {b"filenames": [b"x.png"] * 12, b"batch_label": b"batch", b"fine_labels": fine.tolist(),
                 b"coarse_labels": mapping[fine].tolist(),
                 b"data": rng.integers(0, 256, (12, 3072), dtype=np.uint8)}
        (folder / split).write_bytes(pickle.dumps(batch, protocol=2))
    fine_names = [f"fine{i}".encode() for i in range(100)]
    coarse_names = [f"coarse{i}".encode() for i in range(20)]
    (folder / "meta").write_bytes(pickle.dumps(
        {b"fine_label_names": fine_names, b"coarse_label_names": coarse_names}, protocol=2))
    images, labels, names = load_hierarchy("cifar100", "train", path=tmp_path)
    assert images.shape == (12, 32, 32, 3) and labels["fine"].tolist() == fine.tolist()
    assert names["fine"][7] == "fine7" and names["coarse"][19] == "coarse19"
    assert cifar100_names(folder) == (names["fine"], names["coarse"])
    # A broken superclass map is caught when the set is loaded.
    batch = pickle.loads((folder / "test").read_bytes())
    batch[b"fine_labels"] = [3, 3]
    batch[b"coarse_labels"] = [0, 1]
    batch[b"data"] = batch[b"data"][:2]
    batch[b"filenames"] = batch[b"filenames"][:2]
    (folder / "test").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(ValueError, match=r"fine class 3 \('fine3'\) lies under coarse classes 0 \('coarse0'\), 1"):
        load_hierarchy("cifar100", "test", path=tmp_path)
