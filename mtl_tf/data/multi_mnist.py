"""MultiMNIST and its kin: two items on one canvas, one task per item (`left`, `right`).

`multi_mnist` is Sener and Koltun's construction (NeurIPS 2018; their code,
isl-org/MultiObjectiveOptimization, `multi_task/loaders/multi_mnist_loader.py`): every
image of a split is the top-left item, one image of the same split drawn uniformly at
random (with replacement, possibly itself) the bottom-right one; on a 36 x 36 canvas they
sit at [0:28, 0:28] and [6:34, 6:34], the pixel-wise maximum where they overlap, and the
canvas is resized to 28 x 28 by nearest neighbour (`scipy.misc.imresize(..., 'nearest')`,
PIL's nearest: output pixel i reads input pixel floor((i + 0.5) * 36 / 28)).

`multi_fashion` (two Fashion-MNIST items) and `multi_fashion_mnist` (a Fashion-MNIST item
top left, an MNIST digit bottom right) are the sets of Lin et al. (Pareto MTL, NeurIPS
2019). Their repository (Xi-L/ParetoMTL) ships the sets as pickles of 36 x 36 images
(120,000 training, 20,000 test) and no code that builds them; the paper describes them as
MultiMNIST's construction with each item shifted up to 4 pixels. Here: the canvas is
36 x 36 and kept at that size (their network reads 36 x 36); the top-left item sits at
(dy, dx) and the bottom-right one at (4 + dy', 4 + dx'), each offset uniform in 0..4 and
drawn per image, so every item moves up to 4 pixels inside its corner and the two
overlap as in MultiMNIST; the maximum where they overlap.

Where ours differs, and why:
- Every draw is seeded (`seed`, and each split its own stream), so a data set is the same
  on every machine; the authors' loaders drew with NumPy's global state once.
- The authors train on the 60,000 training images and test on the 10,000 (Pareto MTL: two
  composites per image, 120,000 and 20,000); here one composite per image, and the last
  10,000 training images make a validation split (`train` is the first 50,000), so methods
  and learning rates are chosen without reading the test set. Each split draws its
  partners from itself.
- `imresize` also rescales intensities to the full 0..255 range (bytescale); a canvas
  with an MNIST digit already spans 0..255, so that is the identity and is not done.
- Sener and Koltun normalise with MNIST's mean 0.1307 and std 0.3081; `mtl_tf.data.load`
  gives pixels in [0, 1], as for every other set.
"""

import functools

import numpy as np

CANVAS, OFFSET, SIZE = 36, 6, 28  # Sener and Koltun's canvas, bottom-right offset, output size
SHIFT = 4  # Pareto MTL: each item moves up to 4 pixels
TASKS = ("left", "right")
SPLITS = ("train", "val", "test")
# Each split reads these images of its sources: MNIST's train50k / val10k / test, and
# Fashion-MNIST's training set cut the same way (it has no validation split of its own).
_RANGES = {"train": ("train", 0, 50_000), "val": ("train", 50_000, 60_000), "test": ("test", 0, 10_000)}
_SPLIT_STREAM = {"train": 0, "val": 1, "test": 2}


def nearest_indices(size_in, size_out):
    """The input pixel each output pixel reads under PIL's nearest-neighbour resize."""
    return np.minimum(((np.arange(size_out) + 0.5) * size_in / size_out).astype(np.int64), size_in - 1)


def compose(left, right, left_at=(0, 0), right_at=(OFFSET, OFFSET), canvas=CANVAS, size=SIZE):
    """Two stacks of N x 28 x 28 uint8 items as N x size x size uint8 images: each item
    with its top-left corner at `left_at` / `right_at` ((row, column), or N x 2 arrays of
    one position per image) on a canvas x canvas canvas, the pixel-wise maximum where they
    overlap, then resized to size x size by nearest neighbour (none when size == canvas)."""
    left, right = np.asarray(left, np.uint8), np.asarray(right, np.uint8)
    n, h, w = left.shape
    out = np.zeros((n, canvas, canvas), np.uint8)
    rows, cols = np.arange(h)[None, :, None], np.arange(w)[None, None, :]
    index = np.arange(n)[:, None, None]
    for items, at in ((left, left_at), (right, right_at)):
        at = np.broadcast_to(np.asarray(at, np.int64), (n, 2))
        r, c = at[:, :1, None] + rows, at[:, 1:, None] + cols
        out[index, r, c] = np.maximum(out[index, r, c], items)
    if size != canvas:
        pick = nearest_indices(canvas, size)
        out = out[:, pick][:, :, pick]
    return out


def draws(n, seed, split, shifted):
    """Each image's bottom-right partner (uniform over the split) and, when `shifted`,
    the two items' positions, from a stream of its own for every (seed, split)."""
    rng = np.random.default_rng([seed, _SPLIT_STREAM[split]])
    pick = rng.integers(0, n, size=n)
    if not shifted:
        return pick, (0, 0), (OFFSET, OFFSET)
    offsets = rng.integers(0, SHIFT + 1, size=(n, 4))
    return pick, offsets[:, :2], SHIFT + offsets[:, 2:]


@functools.lru_cache(maxsize=6)
def _build(name, split, seed):
    from mtl_tf.data.loaders import load_numpy

    left_source, right_source = {"multi_mnist": ("mnist", "mnist"), "multi_fashion": ("fashion_mnist",) * 2,
                                 "multi_fashion_mnist": ("fashion_mnist", "mnist")}[name]
    source_split, start, stop = _RANGES[split]
    left_images, left_labels = load_numpy(left_source, source_split)
    right_images, right_labels = load_numpy(right_source, source_split)
    left_images, left_labels = left_images[start:stop], left_labels[start:stop]
    right_images, right_labels = right_images[start:stop], right_labels[start:stop]
    shifted = name != "multi_mnist"
    pick, left_at, right_at = draws(len(left_images), seed, split, shifted)
    images = compose(left_images, right_images[pick], left_at, right_at, size=CANVAS if shifted else SIZE)
    images.flags.writeable = False
    labels = {"left": left_labels.copy(), "right": right_labels[pick]}
    for values in labels.values():
        values.flags.writeable = False
    return images, labels


def load(name, split, seed=0):
    """`(images, {"left", "right"} int64 labels)` of `name`'s `split`: uint8 images,
    N x 28 x 28 for `multi_mnist`, N x 36 x 36 for the Pareto MTL sets."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative integer. Received: seed={seed!r}")
    images, labels = _build(name, split, seed)
    return images.copy(), {task: values.copy() for task, values in labels.items()}
