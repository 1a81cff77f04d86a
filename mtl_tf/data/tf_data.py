"""`load(name, split)`: a batched, prefetched `tf.data.Dataset` over `load_numpy`."""

import numpy as np

from mtl_tf.data.loaders import load_numpy


def load(name, split, batch_size=128, shuffle=False, seed=0, normalize=True,
         drop_remainder=False, **options):
    """Data set `name`'s `split` as a batched, prefetched `tf.data.Dataset`.

    Args:
        name, split, **options: as for `load_numpy`.
        batch_size: int. Examples per batch. Defaults to `128`.
        shuffle: bool. Reshuffle every epoch (seeded). Defaults to `False`.
        seed: int. The shuffle seed. Defaults to `0`.
        normalize: bool. Images as float32 in [0, 1] with a trailing channel axis for
            grey images (N x 28 x 28 x 1); else the raw arrays. Defaults to `True`.
        drop_remainder: bool. Drop a last, smaller batch. Defaults to `False`.

    Returns:
        A `tf.data.Dataset` of `(images, labels)` batches; `labels` is a dict keyed by
        task for sets with several labels.

    Example:
    ```python
    from mtl_tf.data import load
    images, labels = next(iter(load("mnist", "test", batch_size=32)))
    assert images.shape == (32, 28, 28, 1) and labels.shape == (32,)
    ```
    """
    import tensorflow as tf

    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer. Received: batch_size={batch_size!r}")
    images, labels = load_numpy(name, split, **options)
    if normalize:
        images = images.astype(np.float32) / 255.0
        if name != "mnist_pairs" and images.ndim == 3:
            images = images[..., None]
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    if shuffle:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder).prefetch(2)
    # The data are in memory: autotuning buys nothing and stalls at epoch ends on 2 cores.
    options_ = tf.data.Options()
    options_.autotune.enabled = False
    return dataset.with_options(options_)
