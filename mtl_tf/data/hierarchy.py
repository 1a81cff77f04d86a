"""Coarse and fine label sets on the same images (paper 004): CIFAR-100 when its files are
present, and real hierarchies that are always here: Fashion-MNIST in four groups, and
MNIST + Fashion-MNIST + letters pooled (fine: the 30 classes, coarse: which data set)."""

import numpy as np

from mtl_tf.data.helpers import FASHION_MNIST_CLASSES, FASHION_MNIST_COARSE, fashion_coarse_labels
from mtl_tf.data.loaders import _find_cifar100, load_numpy
from mtl_tf.data.safe_pickle import safe_unpickle
from mtl_tf.names import unknown_name

HIERARCHIES = {
    "cifar100": "CIFAR-100: 100 classes in 20 superclasses (needs its files)",
    "fashion_mnist": "Fashion-MNIST: 10 garments in 4 groups (upper body, lower or whole body, footwear, bag)",
    "pooled": "MNIST + Fashion-MNIST + letters A-J rendered from fonts: 30 classes in 3 data sets",
}
POOLED = ("mnist", "fashion_mnist", "letters")


def check_hierarchy(fine, coarse, fine_names=None, coarse_names=None):
    """Checks that `fine` refines `coarse` (every fine class lies under one coarse class)
    and returns that map: an int array, fine class -> coarse class (-1 for a fine class
    never seen).

    Raises:
        ValueError: the label arrays differ in length, or a fine class appears under two
            coarse classes (the error names it, and them).
    """
    fine, coarse = np.asarray(fine).reshape(-1), np.asarray(coarse).reshape(-1)
    if len(fine) != len(coarse):
        raise ValueError(f"`fine` and `coarse` must label the same examples. Received "
                         f"{len(fine)} fine and {len(coarse)} coarse labels.")
    for name, labels in (("fine", fine), ("coarse", coarse)):
        if labels.dtype.kind not in "iu" or (labels.size and labels.min() < 0):
            raise ValueError(f"`{name}` must hold non-negative integer labels. Received "
                             f"dtype {labels.dtype}, minimum {labels.min() if labels.size else None}")
    mapping = np.full(int(fine.max()) + 1 if fine.size else 0, -1, np.int64)
    pairs = np.unique(np.stack([fine, coarse], 1), axis=0)
    for f in np.unique(pairs[:, 0]):
        under = pairs[pairs[:, 0] == f, 1]
        if len(under) > 1:
            def named(labels, i):
                return f"{i} ({labels[i]!r})" if labels is not None and i < len(labels) else str(i)
            raise ValueError(
                f"`fine` is not a refinement of `coarse`: fine class {named(fine_names, int(f))} lies "
                f"under coarse classes {', '.join(named(coarse_names, int(c)) for c in under)}.")
        mapping[f] = under[0]
    return mapping


def cifar100_names(path=None):
    """CIFAR-100's `(fine_names, coarse_names)`, read from its `meta` file."""
    folder = _find_cifar100(path)
    meta = safe_unpickle(folder / "meta")
    if not isinstance(meta, dict):
        raise ValueError(f"{folder / 'meta'} is not CIFAR-100's meta file: it holds a "
                         f"{type(meta).__name__}, not a dict")
    meta = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in meta.items()}
    result = []
    for key, count in (("fine_label_names", 100), ("coarse_label_names", 20)):
        values = meta.get(key)
        if not isinstance(values, (list, tuple)) or len(values) != count:
            raise ValueError(f"{folder / 'meta'} has no `{key}` of {count} names")
        result.append([v.decode("latin1") if isinstance(v, bytes) else str(v) for v in values])
    return tuple(result)


def load_hierarchy(name, split, path=None):
    """One split of a coarse/fine data set.

    Args:
        name: str. A key of `HIERARCHIES`.
        split: str. `"train"` or `"test"`.
        path: the CIFAR-100 folder or archive (`cifar100` only; see `load_numpy`).

    Returns:
        `(images, {"fine": ..., "coarse": ...}, names)`: uint8 images (N x H x W x C), int64
        labels, and `names` a dict of the fine and coarse class names, checked to form a
        hierarchy.
    """
    if name not in HIERARCHIES:
        raise unknown_name("coarse/fine data set", "name", name, HIERARCHIES)
    if split not in ("train", "test"):
        raise ValueError(f"`split` must be 'train' or 'test'. Received: split={split!r}")
    if name == "cifar100":
        images, labels = load_numpy("cifar100", split, path=path)
        fine_names, coarse_names = cifar100_names(path)
    elif name == "fashion_mnist":
        images, fine = load_numpy("fashion_mnist", split)
        images = images[..., None]
        labels = {"fine": fine.astype(np.int64), "coarse": fashion_coarse_labels(fine)}
        fine_names, coarse_names = list(FASHION_MNIST_CLASSES), list(FASHION_MNIST_COARSE)
    else:
        parts = [load_numpy(n, split) for n in POOLED]
        images = np.concatenate([x for x, _ in parts])[..., None]
        labels = {"fine": np.concatenate([y.astype(np.int64) + 10 * i for i, (_, y) in enumerate(parts)]),
                  "coarse": np.concatenate([np.full(len(y), i, np.int64) for i, (_, y) in enumerate(parts)])}
        fine_names = ([f"digit {d}" for d in range(10)] + list(FASHION_MNIST_CLASSES)
                      + [f"letter {c}" for c in "ABCDEFGHIJ"])
        coarse_names = list(POOLED)
    check_hierarchy(labels["fine"], labels["coarse"], fine_names, coarse_names)
    return images, labels, {"fine": list(fine_names), "coarse": list(coarse_names)}
