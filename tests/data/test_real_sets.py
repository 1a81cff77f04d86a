"""The real data sets, as `make data` leaves them: sizes, labels, pixels, determinism."""

import hashlib

import numpy as np
import pytest

from mtl_tf.data import letters, load_numpy, sources
from mtl_tf.data._font_manifest import FONTS

# Published MNIST class counts (LeCun et al.), digits 0..9.
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_mnist_label_counts_are_the_published_ones():
    _, train = load_numpy("mnist", "train")
    _, test = load_numpy("mnist", "test")
    assert np.bincount(train).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(test).tolist() == MNIST_TEST_COUNTS
    assert train.dtype == np.int64


def test_mnist_pixels_are_integers_0_to_255_exactly():
    from mtl_tf.data.safe_pickle import safe_unpickle

    images, _ = load_numpy("mnist", "test")
    assert images.dtype == np.uint8 and images.shape == (10000, 28, 28)
    assert images.min() == 0 and images.max() == 255
    # The pickle's floats are uint8 / 256 exactly: the conversion loses nothing.
    (pickle_path,) = sources.require("mnist")
    floats = safe_unpickle(pickle_path)[2][0]
    np.testing.assert_array_equal(floats * 256.0, images.reshape(-1, 784).astype(np.float32))


def test_mnist_train50k_and_val10k_are_train_in_order():
    x, y = load_numpy("mnist", "train")
    x50, y50 = load_numpy("mnist", "train50k")
    x10, y10 = load_numpy("mnist", "val10k")
    assert len(x50) == 50000 and len(x10) == 10000
    np.testing.assert_array_equal(np.concatenate([x50, x10]), x)
    np.testing.assert_array_equal(np.concatenate([y50, y10]), y)
    assert y[:5].tolist() == [5, 0, 4, 1, 9]  # the first training digits of MNIST


@pytest.mark.parametrize("split, size", [("train", 60000), ("test", 10000)])
def test_fashion_mnist_sizes_and_classes(split, size):
    images, labels = load_numpy("fashion_mnist", split)
    assert images.shape == (size, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [size // 10] * 10
    assert labels.dtype == np.int64


def test_letters_are_balanced_and_match_their_recorded_bytes():
    for split, size in letters.SPLITS.items():
        images, labels = load_numpy("letters", split)
        assert images.shape == (size, 28, 28) and images.dtype == np.uint8
        assert np.bincount(labels).tolist() == [size // 10] * 10
        digest = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()
        assert digest == letters.RENDERED_SHA256[split], split
        # Glyphs fill the frame: no blank images, ink in a plausible share of pixels.
        assert (images.reshape(size, -1).max(axis=1) > 128).all()
        assert 0.1 < (images > 128).mean() < 0.4


def test_letters_render_deterministically_from_the_fonts():
    first = letters.render("test", letters.font_files())
    cached = load_numpy("letters", "test")
    np.testing.assert_array_equal(first[0], cached[0])
    np.testing.assert_array_equal(first[1], cached[1])


def test_letters_train_and_test_fonts_are_disjoint():
    side = letters.font_split()
    families = {s: {FONTS[i][3] for i in side if side[i] == s} for s in ("train", "test")}
    groups = {s: {letters.font_group(f) for f in fams} for s, fams in families.items()}
    assert families["train"] and families["test"]
    assert not families["train"] & families["test"]
    assert not groups["train"] & groups["test"]
    # Metric clones count as one design: Helvetica's clones all sit on one side.
    helvetica = {"Nimbus Sans", "Liberation Sans", "TeX Gyre Heros", "FreeSans"}
    assert helvetica <= families["train"] or helvetica <= families["test"]
    test_share = sum(v == "test" for v in side.values()) / len(side)
    assert letters.TEST_FONT_SHARE <= test_share < 0.35


def test_mnist_pairs_targets_agree_with_digits():
    images, _ = load_numpy("mnist", "train")
    mnist_labels = load_numpy("mnist", "train")[1]
    pairs, labels = load_numpy("mnist_pairs", "train")
    assert pairs.shape == (1000, 2, 14, 14) and pairs.dtype == np.float32
    np.testing.assert_array_equal(labels["compare"], labels["digit_a"] <= labels["digit_b"])
    # Each side is a 2x2 average of a real MNIST image with that digit.
    pooled = images.reshape(-1, 14, 2, 14, 2).astype(np.float32).mean(axis=(2, 4))
    match = np.flatnonzero((pooled == pairs[0, 0]).all(axis=(1, 2)))
    assert len(match) >= 1 and mnist_labels[match[0]] == labels["digit_a"][0]
    assert pairs.max() <= 255 and pairs.min() >= 0


def test_mnist_pairs_test_split_comes_from_mnist_test_and_follows_the_seed():
    test_pairs, test_labels = load_numpy("mnist_pairs", "test")
    again, _ = load_numpy("mnist_pairs", "test", seed=0)
    other, _ = load_numpy("mnist_pairs", "test", seed=1)
    np.testing.assert_array_equal(test_pairs, again)
    assert not np.array_equal(test_pairs, other)
    images, mnist_labels = load_numpy("mnist", "test")
    pooled = images.reshape(-1, 14, 2, 14, 2).astype(np.float32).mean(axis=(2, 4))
    match = np.flatnonzero((pooled == test_pairs[5, 1]).all(axis=(1, 2)))
    assert len(match) >= 1 and mnist_labels[match[0]] == test_labels["digit_b"][5]


def test_fetch_is_idempotent():
    messages = []
    assert sources.fetch(log=messages.append) == 0
    assert messages == []
