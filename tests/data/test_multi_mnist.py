"""MultiMNIST and the Pareto MTL sets against an independent rebuild: pixel loops and PIL's
resize, from the authors' description (`mtl_tf/data/multi_mnist.py`)."""

import numpy as np
import pytest
from PIL import Image

from mtl_tf.data import load_numpy
from mtl_tf.data.multi_mnist import draws


def _rebuild(left, right, left_at, right_at, resize):
    canvas = np.zeros((36, 36), np.float64)
    for item, (r, c) in ((left, left_at), (right, right_at)):
        for i in range(28):
            for j in range(28):
                canvas[r + i, c + j] = max(canvas[r + i, c + j], item[i, j])
    image = Image.fromarray(canvas.astype(np.uint8))
    return np.asarray(image.resize((28, 28), Image.NEAREST)) if resize else np.asarray(image)


def test_multi_mnist_is_sener_and_koltuns_construction():
    images, labels = load_numpy("multi_mnist", "val")
    digits, digit_labels = load_numpy("mnist", "val10k")
    pick, _, _ = draws(len(digits), 0, "val", shifted=False)
    assert images.shape == (10_000, 28, 28) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels["left"], digit_labels)
    np.testing.assert_array_equal(labels["right"], digit_labels[pick])
    for i in (0, 1, 17, 9_999):
        expected = _rebuild(digits[i], digits[pick[i]], (0, 0), (6, 6), resize=True)
        np.testing.assert_array_equal(images[i], expected)


@pytest.mark.parametrize("name, sources", [("multi_fashion", ("fashion_mnist", "fashion_mnist")),
                                           ("multi_fashion_mnist", ("fashion_mnist", "mnist"))])
def test_pareto_mtl_sets_shift_each_item_inside_its_corner(name, sources):
    images, labels = load_numpy(name, "test")
    left, left_labels = load_numpy(sources[0], "test")
    right, right_labels = load_numpy(sources[1], "test")
    pick, left_at, right_at = draws(len(left), 0, "test", shifted=True)
    assert images.shape == (10_000, 36, 36)
    np.testing.assert_array_equal(labels["left"], left_labels)
    np.testing.assert_array_equal(labels["right"], right_labels[pick])
    assert left_at.min() == 0 and left_at.max() == 4 and right_at.min() == 4 and right_at.max() == 8
    assert len({tuple(p) for p in left_at}) == 25  # every shift of 0..4 in both axes occurs
    for i in (0, 5, 9_999):
        np.testing.assert_array_equal(images[i], _rebuild(left[i], right[pick[i]], left_at[i], right_at[i], False))


def test_splits_sizes_seeds_and_partners():
    train, train_labels = load_numpy("multi_mnist", "train")
    test, _ = load_numpy("multi_mnist", "test")
    assert len(train) == 50_000 and len(test) == 10_000
    np.testing.assert_array_equal(train_labels["left"], load_numpy("mnist", "train50k")[1])
    pick, _, _ = draws(50_000, 0, "train", shifted=False)
    # Uniform with replacement: about 1/e of the images are nobody's partner.
    assert abs(len(np.setdiff1d(np.arange(50_000), pick)) / 50_000 - np.exp(-1)) < 0.01
    again, _ = load_numpy("multi_mnist", "val", seed=0)
    other, other_labels = load_numpy("multi_mnist", "val", seed=1)
    np.testing.assert_array_equal(again, load_numpy("multi_mnist", "val")[0])
    assert (other_labels["right"] != load_numpy("multi_mnist", "val")[1]["right"]).mean() > 0.8
    again[0, 0, 0] = 255  # a caller's copy: the cached set is not changed
    assert load_numpy("multi_mnist", "val")[0][0, 0, 0] == 0


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="seed"):
        load_numpy("multi_mnist", "val", seed=-1)
    with pytest.raises(ValueError, match="split"):
        load_numpy("multi_fashion", "train50k")
