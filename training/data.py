"""Input pipelines the trainer accepts."""

import numpy as np
import tensorflow as tf


def epoch_dataset(x, y, batch_size, seed=0, start_epoch=0, shuffle=True, skip=0):
    """An endless dataset of batches from in-memory arrays whose order in epoch e depends
    only on (seed, e), so a run resumed at epoch e sees exactly the batches an
    uninterrupted run would. Batches never straddle an epoch boundary. `skip` batches of
    the stream from `start_epoch` on are left out, so a stream cut into epochs of another
    length resumes where it stopped.

    Returns (dataset, steps_per_epoch): the steps of one pass over the arrays.
    """
    x = tf.constant(x)
    y = tf.nest.map_structure(tf.constant, y)
    n = int(x.shape[0])
    steps = -(-n // batch_size)
    start_epoch, skip = start_epoch + skip // steps, skip % steps

    def epoch_indices(epoch):
        indices = tf.range(n, dtype=tf.int64)
        if shuffle:
            indices = tf.random.experimental.stateless_shuffle(
                indices, seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
        return tf.data.Dataset.from_tensor_slices(indices).batch(batch_size)

    def gather(indices):
        return tf.gather(x, indices), tf.nest.map_structure(lambda a: tf.gather(a, indices), y)

    dataset = (tf.data.Dataset.range(start_epoch, np.iinfo(np.int64).max)
               .flat_map(epoch_indices).map(gather).prefetch(2))
    options = tf.data.Options()
    options.autotune.enabled = False  # in-memory data: autotuning stalls at epoch ends
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.skip(skip).with_options(options), steps


def check_arrays(x, y, tasks, input_shape, argument="x"):
    """Checks in-memory inputs and labels before they reach the graph, where a wrong
    shape or an out-of-range label fails deep inside TensorFlow. `tasks` are `Task`s;
    `y` is a dict keyed by their names."""
    x = np.asarray(x)
    if x.dtype.kind not in "fiu" or x.dtype.kind == "f" and x.dtype.itemsize > 8:
        raise ValueError(f"`{argument}` must hold numbers. Received dtype {x.dtype}")
    expected = tuple(input_shape[1:])
    if x.ndim != len(expected) + 1 or any(e is not None and e != d for e, d in zip(expected, x.shape[1:])):
        raise ValueError(f"`{argument}` must have shape (batch, {', '.join(map(str, expected))}) for "
                         f"this model. Received shape {x.shape}")
    for task in tasks:
        labels = np.asarray(y[task.name])
        if len(labels) != len(x):
            raise ValueError(f"Labels of task {task.name!r} hold {len(labels)} examples for "
                             f"{len(x)} inputs in `{argument}`.")
        if task.kind in ("multiclass", "binary"):
            high = task.num_outputs if task.kind == "multiclass" else 2
            integral = labels.dtype.kind in "iub" or (
                labels.dtype.kind == "f" and np.all(np.isfinite(labels)) and np.all(labels == np.round(labels)))
            bad = labels[(labels < -1) | (labels >= high)] if integral else labels
            if not integral or bad.size:
                raise ValueError(f"Labels of {task.kind} task {task.name!r} must be integers in "
                                 f"[0, {high}), or -1 where unlabelled. Received e.g. {bad.ravel()[:5].tolist()}")
        elif labels.dtype.kind not in "fiu":
            raise ValueError(f"Targets of {task.kind} task {task.name!r} must be numbers (NaN where "
                             f"unlabelled). Received dtype {labels.dtype}")
