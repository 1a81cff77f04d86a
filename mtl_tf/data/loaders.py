"""`load_numpy(name, split)`: every data set as NumPy arrays, from local files only."""

import functools
import os
from pathlib import Path

import numpy as np

from mtl_tf.data import letters, multi_mnist, paths, sources
from mtl_tf.data.idx import read_idx
from mtl_tf.data.safe_pickle import safe_unpickle
from mtl_tf.names import unknown_name

CIFAR100_ENV = "MTL_TF_CIFAR100"
NOTMNIST_ENV = "MTL_TF_NOTMNIST"

# name -> (splits, loader(split, **options))
_LOADERS = {}


def _register(name, splits):
    def decorator(function):
        _LOADERS[name] = (tuple(splits), function)
        return function

    return decorator


def names():
    """The names `load_numpy` accepts."""
    return sorted(_LOADERS)


def splits(name):
    """The splits data set `name` has."""
    return _LOADERS[_check_name(name)][0]


def _check_name(name):
    if name not in _LOADERS:
        raise unknown_name("data set", "name", name, _LOADERS)
    return name


def load_numpy(name, split, **options):
    """Loads data set `name`'s `split` as NumPy arrays, offline.

    Args:
        name: str. One of `"mnist"`, `"fashion_mnist"`, `"letters"`, `"cifar100"`,
            `"mnist_pairs"`, `"multi_mnist"`, `"multi_fashion"`, `"multi_fashion_mnist"`.
        split: str. `"train"` or `"test"`; MNIST also has `"train50k"` and `"val10k"`
            (the first 50,000 / last 10,000 training images); the `multi_*` sets have
            `"train"`, `"val"` and `"test"` (`mtl_tf.data.multi_mnist`).
        **options: per data set. `letters`: `notmnist=PATH` reads a real notMNIST
            archive instead of the font-rendered set. `cifar100`: `path=DIR`, a
            `cifar-100-python` folder or its `.tar.gz`. `mnist_pairs`: `n=1000` pairs,
            `seed=0`. `multi_*`: `seed=0`, the partners' and shifts' draw.

    Returns:
        `(images, labels)`. Images are uint8, N x H x W (grey) or N x H x W x C
        (colour); `mnist_pairs` images are float32 N x 2 x 14 x 14, the exact 2x2
        averages of the 0..255 pixels. Labels are int64 N, or for sets with several
        labels a dict of int64 arrays keyed by task: `{"fine", "coarse"}` for cifar100,
        `{"compare", "digit_a", "digit_b"}` for mnist_pairs, `{"left", "right"}`
        for the `multi_*` sets.

    Example:
    ```python
    from mtl_tf.data import load_numpy
    images, labels = load_numpy("mnist", "test")
    assert images.shape == (10000, 28, 28) and labels[:3].tolist() == [7, 2, 1]
    ```
    """
    known_splits, loader = _LOADERS[_check_name(name)]
    if split not in known_splits:
        raise ValueError(f"Data set {name!r} has no split `split`={split!r}. "
                         f"Its splits: {list(known_splits)}")
    return loader(split, **options)


@functools.lru_cache(maxsize=1)
def _mnist_all():
    """MNIST's 70,000 images as uint8 (train 60,000 in order, then test 10,000)."""
    try:
        (pickle_path,) = sources.require("mnist")
    except sources.SourceUnavailableError:
        keras_npz = paths.keras_cache_dir() / "mnist.npz"
        if not keras_npz.is_file():
            raise
        with np.load(keras_npz, allow_pickle=False) as data:
            return (np.concatenate([data["x_train"], data["x_test"]]),
                    np.concatenate([data["y_train"], data["y_test"]]).astype(np.int64))
    # mnist.pkl.gz holds float32 pixels equal to uint8/256 exactly.
    splits_ = safe_unpickle(pickle_path)
    images = np.concatenate([x for x, _ in splits_])
    labels = np.concatenate([y for _, y in splits_]).astype(np.int64)
    images = np.rint(images * 256.0).astype(np.uint8).reshape(-1, 28, 28)
    return images, labels


_MNIST_RANGES = {"train": (0, 60_000), "test": (60_000, 70_000),
                 "train50k": (0, 50_000), "val10k": (50_000, 60_000)}


@_register("mnist", _MNIST_RANGES)
def _load_mnist(split):
    images, labels = _mnist_all()
    start, stop = _MNIST_RANGES[split]
    return images[start:stop].copy(), labels[start:stop].copy()


@_register("fashion_mnist", ("train", "test"))
def _load_fashion(split):
    files = {Path(p).name: p for p in sources.require("fashion_mnist")}
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(files[f"{prefix}-images-idx3-ubyte.gz"])
    labels = read_idx(files[f"{prefix}-labels-idx1-ubyte.gz"]).astype(np.int64)
    return images, labels


@_register("letters", letters.SPLITS)
def _load_letters(split, notmnist=None):
    notmnist = notmnist or os.environ.get(NOTMNIST_ENV)
    if notmnist:
        return letters.load_notmnist(split, notmnist)
    return letters.load_rendered(split)


@_register("cifar100", ("train", "test"))
def _load_cifar100(split, path=None):
    folder = _find_cifar100(path)
    return parse_cifar100_batch(safe_unpickle(folder / split), folder / split)


def parse_cifar100_batch(batch, path):
    """Images N x 32 x 32 x 3 and {"fine", "coarse"} labels from an unpickled
    `cifar-100-python` batch; anything else is refused with a ValueError naming `path`."""
    def refuse(why):
        return ValueError(f"{path} is not a CIFAR-100 batch: {why}. Delete it and provide the "
                          f"`cifar-100-python` files again.")

    if not isinstance(batch, dict):
        raise refuse(f"it holds a {type(batch).__name__}, not a dict")
    batch = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in batch.items()}
    missing = sorted({"data", "fine_labels", "coarse_labels"} - set(batch))
    if missing:
        raise refuse(f"it has no {missing}")
    try:
        data = np.asarray(batch["data"])
        fine = np.asarray(batch["fine_labels"])
        coarse = np.asarray(batch["coarse_labels"])
    except (ValueError, TypeError) as error:
        raise refuse(f"its arrays do not convert ({error})") from error
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise refuse(f"`data` must be uint8 N x 3072, not {data.dtype} {data.shape}")
    for name, labels, classes in (("fine_labels", fine, 100), ("coarse_labels", coarse, 20)):
        if labels.shape != (len(data),) or labels.dtype.kind not in "iu" or (
                labels.size and (labels.min() < 0 or labels.max() >= classes)):
            raise refuse(f"`{name}` must be {len(data)} integers in [0, {classes})")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, {"fine": fine.astype(np.int64), "coarse": coarse.astype(np.int64)}


def _find_cifar100(path):
    """A `cifar-100-python` folder: `path`, `$MTL_TF_CIFAR100`, the data dir, the Keras
    cache; a `.tar.gz` found there is unpacked (safely) into the data dir first."""
    from mtl_tf.data.archives import safe_extract

    given = [Path(p).expanduser() for p in (path, os.environ.get(CIFAR100_ENV)) if p]
    looked = []
    for base in given + [paths.data_dir(), paths.keras_cache_dir()]:
        for candidate in (base, base / "cifar-100-python"):
            looked.append(str(candidate))
            if (candidate / "train").is_file() and (candidate / "test").is_file():
                return candidate
        for tarball in (base, base / "cifar-100-python.tar.gz"):
            if tarball.is_file() and tarball.name.endswith((".tar.gz", ".tgz", ".tar")):
                safe_extract(tarball, paths.data_dir())
                return paths.data_dir() / "cifar-100-python"
    raise sources.SourceUnavailableError(
        "CIFAR-100 is not present and cannot be obtained from the package registries. "
        f"Looked for cifar-100-python/{{train,test}} in: {', '.join(dict.fromkeys(looked))}. "
        f"Pass path=... or set ${CIFAR100_ENV} to a cifar-100-python folder or "
        "cifar-100-python.tar.gz."
    )


@_register("mnist_pairs", ("train", "test"))
def _load_mnist_pairs(split, n=1000, seed=0):
    from mtl_tf.data.helpers import make_pairs

    images, labels = load_numpy("mnist", split)
    return make_pairs(images, labels, n=n, seed=seed)


def _register_multi(name):
    @_register(name, multi_mnist.SPLITS)
    def _load(split, seed=0):
        return multi_mnist.load(name, split, seed=seed)


for _name in ("multi_mnist", "multi_fashion", "multi_fashion_mnist"):
    _register_multi(_name)
