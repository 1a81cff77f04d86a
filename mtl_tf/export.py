"""Export for serving: a SavedModel with outputs named by task, and the `.keras` format.

The SavedModel's `serving_default` takes one float32 tensor named `inputs` (batch first,
the model's input shape) and returns a dict keyed by task name; one more signature per
task returns just that task's output. A process that never imported this project loads
it with `tf.saved_model.load(path).signatures["serving_default"](inputs=...)`, and so do
TF Serving and `saved_model_cli run`, whose TF1 session loader needs every variable in
the SavedModel's restore op: the export goes through Keras's `ExportArchive`, which
tracks them.
Writes are atomic: everything goes to a temporary folder beside `path`, renamed onto
`path` only when complete, so a failed export leaves nothing behind (and an existing
export untouched unless `overwrite=True`).
"""

import json
import shutil
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from mtl_tf.errors import brief


SERVING_FILE = "serving.json"


def serving_info(path):
    """The `serving.json` of an export (tasks, input shape, value range), or None."""
    file = Path(path) / SERVING_FILE
    return json.loads(file.read_text()) if file.is_file() else None


def _output_names(model):
    outputs = model.output
    if not isinstance(outputs, dict):
        raise ValueError(f"Only models with dict outputs keyed by task can be exported with "
                         f"task names. Model {model.name!r} returns {type(outputs).__name__}.")
    return list(outputs)


def _check_target(path, overwrite, saved_model=True):
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"`path` already exists; pass overwrite=True to replace it. "
                              f"Received: path={str(path)!r}")
    # overwrite=True replaces an export, never a folder or file of something else.
    what = "a SavedModel folder" if saved_model else "a .keras file"
    if path.exists() and not ((path / "saved_model.pb").is_file() if saved_model else path.is_file()):
        raise FileExistsError(f"`path` exists and is not {what}: refusing to replace it. "
                              f"Received: path={str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _replace(tmp, path):
    """Renames `tmp` onto `path`, moving an old `path` aside first and deleting it after.
    Then clears what an export of `path` killed mid-way left beside it (one writer per
    path is assumed)."""
    old = None
    if path.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
        path.rename(old / "previous")
    tmp.rename(path)
    if old:
        shutil.rmtree(old, ignore_errors=True)
    for stale in [*path.parent.glob(f".{path.name}.partial-*"), *path.parent.glob(f".{path.name}.old-*")]:
        shutil.rmtree(stale, ignore_errors=True)


def _write_failed(error, path):
    """The error of a write that failed (a full disk): what was at `path` is untouched."""
    kept = "the previous export there is untouched" if path.exists() else "nothing was written there"
    return OSError(f"Writing {str(path)!r} failed ({brief(error)}); {kept}.")


def save(model, path, overwrite=False, value_range=None):
    """Writes `model` as a SavedModel at `path` (see the module docstring).

    Beside the SavedModel's own files, `serving.json` records the tasks, the input shape
    and the value range, for clients such as `mtl-tf predict`; loaders ignore it.

    Args:
        model: a `keras.Model` with one input and dict outputs keyed by task.
        path: str or `Path`. The SavedModel folder to create.
        overwrite: bool. Replace an existing `path`. Defaults to `False`.
        value_range: None or `(low, high)`. The range the model was trained on, e.g.
            `(0.0, 1.0)` for pixels / 255: the served signatures then refuse inputs
            outside it (or NaN) with a message saying so, instead of answering
            nonsense. Defaults to `None` (any finite or infinite value).

    Returns:
        The `Path` written.

    Example:
    ```python
    import tempfile, numpy as np, tensorflow as tf
    import zoo, mtl_tf.export
    model = zoo.build("hard_sharing", tasks={"a": 2}, input_shape=(4,), trunk="dense", units=(8,))
    path = mtl_tf.export.save(model, tempfile.mkdtemp() + "/m")
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    assert set(serve(inputs=tf.zeros((1, 4)))) == {"a"}
    ```
    """
    names = _output_names(model)
    if len(model.inputs) != 1:
        raise ValueError(f"Only models with one input can be exported with the `inputs` "
                         f"signature. Model {model.name!r} has {len(model.inputs)}.")
    if value_range is not None and (not isinstance(value_range, (tuple, list)) or len(value_range) != 2
                                    or not all(isinstance(v, (int, float)) for v in value_range)
                                    or not value_range[0] < value_range[1]):
        raise ValueError(f"`value_range` must be None or (low, high) with low < high. "
                         f"Received: value_range={value_range!r}")
    path = _check_target(path, overwrite)
    spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32, name="inputs")
    expected = tuple(model.input_shape[1:])
    message = f"`inputs` must be float32 of shape (batch, {', '.join(map(str, expected))})"

    def run(inputs):
        # A loaded signature does not enforce its input shape; say plainly what is wrong
        # instead of failing deep inside the graph.
        checks = [tf.debugging.assert_equal(tf.shape(inputs)[1:], tf.constant(expected),
                                            message=message)]
        if value_range is not None:
            low, high = (float(v) for v in value_range)
            inside = tf.reduce_all((inputs >= low) & (inputs <= high))  # False for NaN too
            checks.append(tf.debugging.Assert(inside, [
                f"`inputs` must lie in [{low}, {high}], the range this model was trained on. "
                f"Smallest and largest values received:", tf.reduce_min(inputs), tf.reduce_max(inputs)]))
        with tf.control_dependencies(checks):
            return model(tf.identity(inputs), training=False)

    # Keras's ExportArchive tracks the model's variables so that the SavedModel's restore
    # op covers them: TF Serving and `saved_model_cli run` (the TF1 session loader) need it.
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", lambda inputs: {
        name: tf.identity(value, name=name) for name, value in run(inputs).items() if name in names},
        input_signature=[spec])
    for name in names:
        archive.add_endpoint(name, lambda inputs, _name=name: {_name: run(inputs)[_name]},
                             input_signature=[spec])
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    try:
        try:
            archive.write_out(str(tmp), verbose=False)
            (tmp / SERVING_FILE).write_text(json.dumps({
                "tasks": names, "input_shape": list(expected),
                "value_range": list(value_range) if value_range is not None else None}, indent=2))
        except (OSError, tf.errors.OpError) as error:
            raise _write_failed(error, path) from error
        _replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def save_keras(model, path, overwrite=False):
    """Writes `model` in the Keras `.keras` format, atomically. Load it with
    `load_keras(path)`, which keeps Keras's `safe_mode=True` (no arbitrary code)."""
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"`path` must end in .keras. Received: path={str(path)!r}")
    path = _check_target(path, overwrite, saved_model=False)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    try:
        try:
            model.save(str(tmp / path.name))
        except OSError as error:
            raise _write_failed(error, path) from error
        (tmp / path.name).replace(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def load_keras(path):
    """Loads a `.keras` file with `safe_mode=True`."""
    return keras.saving.load_model(str(path), safe_mode=True)
