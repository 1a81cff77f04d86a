"""Data helpers the papers need: pairs, pooled multi-task sets, labelled/unlabelled
splits, and a coarse grouping of Fashion-MNIST."""

import dataclasses

import numpy as np


def make_pairs(images, labels, n=1000, seed=0):
    """The pair-comparison set of paper 003 (EE-559's `generate_pair_sets`).

    Images are 2x2 average-pooled to 14x14, then `2 n` distinct images are drawn with
    `seed` and paired; the target is 1 when the first digit is <= the second.

    Returns `(pairs, labels)`: float32 N x 2 x 14 x 14, and a dict of int64 arrays
    `compare` (the target), `digit_a`, `digit_b` (both digit classes).
    """
    images = np.asarray(images)
    if not isinstance(n, (int, np.integer)) or n < 1 or 2 * n > len(images):
        raise ValueError(f"`n` must be a positive integer with 2 n <= {len(images)} images. "
                         f"Received: n={n!r}")
    pooled = images.reshape(-1, 14, 2, 14, 2).astype(np.float32).mean(axis=(2, 4))
    chosen = np.random.default_rng(seed).permutation(len(images))[: 2 * n].reshape(n, 2)
    digits = np.asarray(labels, np.int64)[chosen]
    return pooled[chosen], {
        "compare": (digits[:, 0] <= digits[:, 1]).astype(np.int64),
        "digit_a": digits[:, 0].copy(),
        "digit_b": digits[:, 1].copy(),
    }


@dataclasses.dataclass(frozen=True)
class PooledData:
    """Several single-task data sets pooled into one (paper 000).

    Attributes:
        images: the images of every set, concatenated (and shuffled if asked).
        joint: float32 N x (C T). Paper 000's zero-padded joint label: example i of
            task t is one-hot in columns [C t, C (t + 1)) and zero elsewhere.
        labels: dict task -> int64 N; -1 where the example belongs to another task.
        mask: float32 N x T; 1 where the example is labelled for that task.
        source: int64 N, the task index each example came from.
        tasks: the task names, in column order.
    """

    images: np.ndarray
    joint: np.ndarray
    labels: dict
    mask: np.ndarray
    source: np.ndarray
    tasks: tuple


def pool(datasets, num_classes=10, seed=None):
    """Pools `{task: (images, labels)}` into one `PooledData`.

    Args:
        datasets: dict of task name -> (images, int labels). Image shapes must agree.
        num_classes: int. Classes per task, the width of each block of `joint`.
            Defaults to `10`.
        seed: int or None. If given, the pooled examples are shuffled with it.

    Example:
    ```python
    import numpy as np
    from mtl_tf.data import pool
    a = (np.zeros((2, 28, 28), np.uint8), np.array([3, 4]))
    b = (np.ones((1, 28, 28), np.uint8), np.array([9]))
    pooled = pool({"mnist": a, "fashion_mnist": b})
    assert pooled.joint.shape == (3, 20) and pooled.joint[2, 19] == 1
    assert pooled.labels["mnist"].tolist() == [3, 4, -1]
    ```
    """
    if not datasets:
        raise ValueError(f"`datasets` must name at least one task. Received: datasets={datasets!r}")
    tasks = tuple(datasets)
    shapes = {task: np.shape(images)[1:] for task, (images, _) in datasets.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"Pooled data sets must share an image shape. Received shapes: {shapes}")
    images = np.concatenate([np.asarray(x) for x, _ in datasets.values()])
    local = np.concatenate([np.asarray(y, np.int64) for _, y in datasets.values()])
    source = np.concatenate([np.full(len(y), t, np.int64)
                             for t, (_, y) in enumerate(datasets.values())])
    if local.min() < 0 or local.max() >= num_classes:
        raise ValueError(f"Labels must lie in [0, `num_classes`). Received: num_classes="
                         f"{num_classes}, labels in [{local.min()}, {local.max()}]")
    if seed is not None:
        order = np.random.default_rng(seed).permutation(len(images))
        images, local, source = images[order], local[order], source[order]
    joint = np.zeros((len(images), num_classes * len(tasks)), np.float32)
    joint[np.arange(len(images)), source * num_classes + local] = 1.0
    mask = (source[:, None] == np.arange(len(tasks))[None, :]).astype(np.float32)
    labels = {task: np.where(source == t, local, -1) for t, task in enumerate(tasks)}
    return PooledData(images, joint, labels, mask, source, tasks)


def split_labelled(images, labels, num_labelled, num_unlabelled, seed=0):
    """Draws `num_labelled` labelled and `num_unlabelled` unlabelled examples (paper 001's
    l and u), disjoint, with `seed`.

    Returns `((labelled_images, labelled_labels), unlabelled_images)`.
    """
    n = len(images)
    for name, value in (("num_labelled", num_labelled), ("num_unlabelled", num_unlabelled)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"`{name}` must be a non-negative integer. Received: {name}={value!r}")
    if num_labelled + num_unlabelled > n:
        raise ValueError(f"`num_labelled` + `num_unlabelled` must be at most the {n} examples "
                         f"given. Received: num_labelled={num_labelled}, "
                         f"num_unlabelled={num_unlabelled}")
    order = np.random.default_rng(seed).permutation(n)
    chosen, rest = order[:num_labelled], order[num_labelled : num_labelled + num_unlabelled]
    return (images[chosen], np.asarray(labels)[chosen]), images[rest]


FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")
# The stand-in for CIFAR-100's superclasses in the coarse/fine experiments (paper 004),
# grouped by where an item is worn: upper body, lower or whole body, feet, carried.
FASHION_MNIST_COARSE = {
    "upper_body": (0, 2, 4, 6),  # T-shirt/top, Pullover, Coat, Shirt
    "lower_or_whole_body": (1, 3),  # Trouser, Dress
    "footwear": (5, 7, 9),  # Sandal, Sneaker, Ankle boot
    "bag": (8,),  # Bag
}
_FINE_TO_COARSE = np.empty(10, np.int64)
for _coarse, _fine in enumerate(FASHION_MNIST_COARSE.values()):
    _FINE_TO_COARSE[list(_fine)] = _coarse


def fashion_coarse_labels(labels):
    """Maps Fashion-MNIST's 10 classes to the 4 groups of `FASHION_MNIST_COARSE`."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"Fashion-MNIST labels must lie in 0..9. Received labels in "
                         f"[{labels.min()}, {labels.max()}]")
    return _FINE_TO_COARSE[labels]
