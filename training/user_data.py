"""A user's own data for `mtl-tf train --data FILE.npz` and `mtl-tf tune --data FILE.npz`,
or a TFDS data set (`--data tfds:NAME`, `load_tfds`).

The file holds an array `x` (N x ...) and one label array per task, named by the task
(`np.savez("data.npz", x=x, price=price, churn=churn)`), and may hold a test split,
`x_test` with `<task>_test` for every task. A task's kind comes from its labels:
- integers (or booleans): multi-class, its classes 0 .. max; -1 marks an example without
  a label for that task;
- floats: regression, one output per column (N, or N x K for K targets); NaN marks an
  example without a label.
The model's input shape is `x`'s. The file is read without pickles (`allow_pickle=False`):
object arrays are refused, as is anything else that would fail deep inside TensorFlow, by
name (the key and the value).
"""

import os
import zipfile
from pathlib import Path

import numpy as np

from mtl_tf.tasks import Task


def load(data, input_key="image", task_keys=None):
    """`load_tfds` for `tfds:NAME`, else `load_npz`."""
    if str(data).startswith("tfds:"):
        return load_tfds(str(data)[5:], input_key, task_keys)
    if task_keys is not None or input_key != "image":
        raise ValueError(f"`input_key` and `task_keys` pick a TFDS data set's features; an .npz names its "
                         f"own (`x` and one array per task). Received: data={str(data)!r}")
    return load_npz(data)


def load_npz(path):
    """`((x, labels), test or None, tasks)`: the training arrays, the test split if the
    file has one (`(x_test, labels)`), and a `Task` per label array."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"`data` must be an .npz file. Received: data={str(path)!r} (no such file)")
    if not zipfile.is_zipfile(path):  # np.load would take it for a pickle
        raise ValueError(f"`data` {str(path)!r} is not a readable .npz file (not a zip archive of "
                         f"arrays: save it with `np.savez`).")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: _read(archive, key, path) for key in archive.files}
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise ValueError(f"`data` {str(path)!r} is not a readable .npz file ({error}).") from None
    return _from_arrays(arrays, str(path))


def _from_arrays(arrays, path):
    """The checked `((x, labels), test, tasks)` of a file's (or a TFDS set's) arrays."""
    if "x" not in arrays:
        raise ValueError(f"`data` {str(path)!r} has no array `x` (the inputs). Keys: {sorted(arrays)}")
    names = [k for k in arrays if k != "x" and k != "x_test" and not k.endswith("_test")]
    if not names:
        raise ValueError(f"`data` {str(path)!r} has no label array: add one per task beside `x`. "
                         f"Keys: {sorted(arrays)}")
    x = _inputs(arrays["x"], "x", path)
    tasks = tuple(_task(name, arrays[name], len(x), path) for name in names)
    labels = {t.name: _labels(arrays[t.name], t) for t in tasks}
    test = None
    if "x_test" in arrays:
        missing = [f"{n}_test" for n in names if f"{n}_test" not in arrays]
        if missing:
            raise ValueError(f"`data` {str(path)!r} has `x_test` but not {missing}: a test split needs "
                             f"every task's labels.")
        x_test = _inputs(arrays["x_test"], "x_test", path)
        if x_test.shape[1:] != x.shape[1:]:
            raise ValueError(f"`data` {str(path)!r}: `x_test` has examples of shape {x_test.shape[1:]}, "
                             f"`x` of {x.shape[1:]}.")
        test_tasks = [_task(f"{t.name}_test", arrays[f"{t.name}_test"], len(x_test), path) for t in tasks]
        for task, seen in zip(tasks, test_tasks):
            if task.kind != seen.kind or (task.kind == "regression" and task.num_outputs != seen.num_outputs):
                raise ValueError(f"`data` {str(path)!r}: `{task.name}_test` holds {seen.kind} labels, "
                                 f"`{task.name}` {task.kind} ones.")
            if task.kind == "multiclass" and seen.num_outputs > task.num_outputs:
                raise ValueError(f"`data` {str(path)!r}: `{task.name}_test` has class "
                                 f"{seen.num_outputs - 1}, which `{task.name}` never has (0 to "
                                 f"{task.num_outputs - 1}).")
        test = (x_test, {t.name: _labels(arrays[f"{t.name}_test"], t) for t in tasks})
    return (x, labels), test, tasks


def _read(archive, key, path):
    try:
        return archive[key]
    except ValueError as error:  # an object array: it would need unpickling
        raise ValueError(f"`data` {str(path)!r}: array {key!r} holds Python objects, which are not read "
                         f"(no pickles); save numbers only ({error}).") from None


def _inputs(x, key, path):
    if x.dtype.kind not in "biuf" or x.ndim < 2 or len(x) == 0:
        raise ValueError(f"`data` {str(path)!r}: `{key}` must be a numeric array of shape (examples, ...). "
                         f"Received dtype {x.dtype}, shape {x.shape}")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise ValueError(f"`data` {str(path)!r}: `{key}` holds NaN or infinite values (at example "
                         f"{int(np.argwhere(~np.isfinite(x))[0][0])}).")
    return x


def _task(name, y, count, path):
    if len(y) != count:
        raise ValueError(f"`data` {str(path)!r}: labels `{name}` hold {len(y)} examples for {count} inputs.")
    if y.dtype.kind in "biu":
        y = y.astype(np.int64)
        if y.ndim != 1:
            raise ValueError(f"`data` {str(path)!r}: integer labels `{name}` must be one class per example "
                             f"(shape (N,)). Received shape {y.shape}")
        low = int(y.min())
        if low < -1:
            raise ValueError(f"`data` {str(path)!r}: labels `{name}` must be classes 0, 1, ... or -1 (no "
                             f"label). Found {low}.")
        if y.max() < 0:
            raise ValueError(f"`data` {str(path)!r}: labels `{name}` mark every example -1 (no label).")
        return Task(name, max(int(y.max()) + 1, 2))
    if y.dtype.kind == "f":
        if np.isnan(y.reshape(len(y), -1)).any(axis=1).all():
            raise ValueError(f"`data` {str(path)!r}: targets `{name}` are NaN (no label) for every example.")
        if np.isinf(y).any():
            raise ValueError(f"`data` {str(path)!r}: targets `{name}` hold infinite values.")
        return Task(name, int(np.prod(y.shape[1:])) if y.ndim > 1 else 1, kind="regression")
    raise ValueError(f"`data` {str(path)!r}: labels `{name}` must be integers (classes, -1: no label) or "
                     f"floats (targets, NaN: no label). Received dtype {y.dtype}")


def _labels(y, task):
    if task.kind == "multiclass":
        return y.astype(np.int64)
    return y.astype(np.float32).reshape(len(y), -1) if y.ndim > 1 else y.astype(np.float32)


def load_tfds(name, input_key="image", task_keys=None, data_dir=None):
    """As `load_npz`, from a TFDS data set: `name` (prepared here, or one of the project's
    `mtl_*` builders, prepared from the local files on first use), the feature `input_key`
    as the inputs and each of `task_keys` (default: the builder's supervised label) as a
    task of the same name; splits `train` and, if it has one, `test`."""
    import tensorflow_datasets as tfds

    from mtl_tf.data import register_tfds_builders

    register_tfds_builders()
    source = f"tfds:{name}"
    data_dir = data_dir or os.environ.get("TFDS_DATA_DIR")  # read now: TFDS reads it once, at import
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except (tfds.core.registered.DatasetNotFoundError, ValueError) as error:
        mine = sorted(b for b in tfds.list_builders() if b.startswith("mtl_"))
        raise ValueError(f"`data` {source!r}: no TFDS data set of that name ({str(error).splitlines()[0]}). "
                         f"The project's, prepared from local files: {mine}") from None
    features = builder.info.features
    keys = list(features.keys()) if hasattr(features, "keys") else []
    if input_key not in keys:
        raise ValueError(f"`data` {source!r} has no feature {input_key!r} for the inputs. Features: {keys}")
    if task_keys is None:
        supervised = builder.info.supervised_keys
        task_keys = [supervised[1]] if supervised else [k for k in keys if k != input_key]
    task_keys = list(task_keys)
    unknown = [k for k in task_keys if k not in keys or k == input_key]
    if unknown or not task_keys:
        raise ValueError(f"`data` {source!r}: task keys {unknown or task_keys} are not label features. "
                         f"Features: {keys} (inputs: {input_key!r})")
    try:
        builder.download_and_prepare()
    except Exception as error:  # noqa: BLE001 - a download where nothing can be downloaded
        raise ValueError(f"`data` {source!r} is not prepared in {builder.data_dir!r} and cannot be prepared "
                         f"here ({type(error).__name__}: {str(error).splitlines()[0][:200]}).") from None
    arrays = {}
    for split, suffix in (("train", ""), ("test", "_test")):
        if split not in builder.info.splits:
            continue
        batch = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
        x = batch[input_key]
        arrays["x" + suffix] = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x
        for key in task_keys:
            arrays[key + suffix] = batch[key]
    if "x" not in arrays:
        raise ValueError(f"`data` {source!r} has no `train` split. Splits: {list(builder.info.splits)}")
    return _from_arrays(arrays, source)
