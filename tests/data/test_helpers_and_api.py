"""Helpers (pooling, l/u split, coarse groups), the tf.data and TFDS entry points, bad input."""

import subprocess
import sys

import numpy as np
import pytest

from mtl_tf.data import (
    FASHION_MNIST_COARSE,
    fashion_coarse_labels,
    load,
    load_numpy,
    make_pairs,
    pool,
    split_labelled,
    sources,
)


def test_pool_builds_the_zero_padded_joint_label_and_mask():
    a = (np.zeros((3, 4, 4), np.uint8), np.array([0, 5, 9]))
    b = (np.ones((2, 4, 4), np.uint8), np.array([1, 2]))
    c = (np.full((1, 4, 4), 2, np.uint8), np.array([7]))
    pooled = pool({"mnist": a, "fashion": b, "letters": c})
    assert pooled.joint.shape == (6, 30) and pooled.tasks == ("mnist", "fashion", "letters")
    assert pooled.joint.sum(axis=1).tolist() == [1.0] * 6
    assert np.flatnonzero(pooled.joint[1]).tolist() == [5]
    assert np.flatnonzero(pooled.joint[4]).tolist() == [12]  # fashion class 2 -> 10 + 2
    assert np.flatnonzero(pooled.joint[5]).tolist() == [27]
    assert pooled.mask.tolist()[3] == [0, 1, 0]
    assert pooled.labels["fashion"].tolist() == [-1, -1, -1, 1, 2, -1]


def test_pool_shuffles_consistently_with_a_seed():
    a = (np.arange(5)[:, None, None] * np.ones((5, 2, 2)), np.arange(5))
    b = (100 + np.arange(5)[:, None, None] * np.ones((5, 2, 2)), np.arange(5))
    pooled = pool({"a": a, "b": b}, seed=3)
    for i in range(10):
        task = pooled.source[i]
        label = pooled.labels[pooled.tasks[task]][i]
        assert pooled.images[i, 0, 0] == label + 100 * task
        assert pooled.joint[i, 10 * task + label] == 1


def test_pool_rejects_mismatched_shapes_and_labels():
    with pytest.raises(ValueError, match="share an image shape"):
        pool({"a": (np.zeros((1, 28, 28)), [0]), "b": (np.zeros((1, 32, 32)), [0])})
    with pytest.raises(ValueError, match=r"num_classes=10, labels in \[0, 12\]"):
        pool({"a": (np.zeros((2, 2, 2)), [0, 12])})


def test_split_labelled_is_disjoint_and_seeded():
    images = np.arange(100)
    labels = images % 10
    (x_l, y_l), x_u = split_labelled(images, labels, 10, 30, seed=1)
    assert len(x_l) == 10 and len(x_u) == 30
    assert not set(x_l) & set(x_u)
    np.testing.assert_array_equal(y_l, x_l % 10)
    (again, _), _ = split_labelled(images, labels, 10, 30, seed=1)
    np.testing.assert_array_equal(x_l, again)
    with pytest.raises(ValueError, match="num_labelled=90, num_unlabelled=20"):
        split_labelled(images, labels, 90, 20)


def test_fashion_coarse_groups_cover_every_class_once():
    fine = [c for classes in FASHION_MNIST_COARSE.values() for c in classes]
    assert sorted(fine) == list(range(10))
    assert fashion_coarse_labels([0, 1, 5, 8, 9]).tolist() == [0, 1, 2, 3, 2]
    with pytest.raises(ValueError, match="0..9"):
        fashion_coarse_labels([10])


def test_make_pairs_rejects_too_many_pairs():
    with pytest.raises(ValueError, match="n=6"):
        make_pairs(np.zeros((10, 28, 28)), np.zeros(10), n=6)


def test_unknown_name_and_split_are_clear_errors():
    with pytest.raises(ValueError, match=r"name='mnits'.*Did you mean 'mnist'"):
        load_numpy("mnits", "train")
    with pytest.raises(ValueError, match=r"`split`='val'.*train50k"):
        load_numpy("mnist", "val")
    with pytest.raises(ValueError, match=r"\['notmnist'\]"):
        sources.fetch(["notmnist"])


def test_missing_source_says_what_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    with pytest.raises(sources.SourceUnavailableError, match="mtl-tf data fetch mnist"):
        sources.require("mnist", root=tmp_path)


def test_tf_data_load_batches_normalised_images():
    dataset = load("fashion_mnist", "test", batch_size=64)
    images, labels = next(iter(dataset))
    assert images.shape == (64, 28, 28, 1) and images.dtype.name == "float32"
    assert 0.0 <= float(images.numpy().min()) and float(images.numpy().max()) <= 1.0
    raw, raw_labels = load_numpy("fashion_mnist", "test")
    np.testing.assert_allclose(images.numpy()[..., 0], raw[:64] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(labels.numpy(), raw_labels[:64])
    batches = sum(1 for _ in dataset)
    assert batches == 157  # 10000 / 64, rounded up


def test_tf_data_load_keeps_task_label_dicts():
    images, labels = next(iter(load("mnist_pairs", "train", batch_size=8)))
    assert images.shape == (8, 2, 14, 14)
    assert set(labels) == {"compare", "digit_a", "digit_b"}


def test_tfds_load_works_once_the_project_is_imported(tmp_path):
    import tensorflow_datasets as tfds

    import mtl_tf  # noqa: F401 - registers the builders

    assert {"mtl_mnist", "mtl_letters", "mtl_mnist_pairs"} <= set(tfds.list_builders())
    dataset = tfds.load("mtl_mnist_pairs", split="test", data_dir=str(tmp_path))
    pairs, labels = load_numpy("mnist_pairs", "test")
    examples = list(dataset.as_numpy_iterator())
    assert len(examples) == len(pairs)
    # TFDS reorders examples on write; match each back to its pair by content.
    index = {pair.tobytes(): i for i, pair in enumerate(pairs)}
    for example in examples[:50]:
        i = index[example["image"].tobytes()]
        assert example["compare"] == labels["compare"][i]
        assert (example["digit_a"], example["digit_b"]) == (labels["digit_a"][i], labels["digit_b"][i])


def test_data_info_command_lists_every_fetchable_set():
    result = subprocess.run([sys.executable, "-m", "training.cli", "data", "info"],
                            capture_output=True, text=True, check=True)
    for name in ("mnist", "fashion_mnist", "letters", "cifar100"):
        assert name in result.stdout
    assert "1/1 files" in result.stdout and "missing" not in result.stdout


@pytest.mark.slow
def test_tfds_multi_mnist_builder_matches_load_numpy(tmp_path):
    import tensorflow_datasets as tfds

    import mtl_tf  # noqa: F401 - registers the builders

    dataset = tfds.load("mtl_multi_mnist", split="val", data_dir=str(tmp_path))
    images, labels = load_numpy("multi_mnist", "val")
    index = {image.tobytes(): i for i, image in enumerate(images)}
    examples = list(dataset.take(50).as_numpy_iterator())
    for example in examples:
        i = index[example["image"][..., 0].tobytes()]
        assert (example["left"], example["right"]) == (labels["left"][i], labels["right"][i])
