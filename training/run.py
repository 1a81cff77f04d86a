"""Command-line runs: train a zoo model on pooled data sets (or, for the coarse/fine
nets, on a coarse/fine data set), export it, predict with it.

A run directory holds `config.json` (enough to rebuild the model), `checkpoints/`,
`history.csv` and `tensorboard/`; `mtl-tf train` with the same run directory resumes. A
Learning to Branch search network trains under `BranchSearch`, and its run directory also
gets `tree.json`, the most probable tree (`--model-option tree=<it>` trains it alone).
"""

import contextlib
import json
import math
import time
from pathlib import Path

import numpy as np

from mtl_tf.data import load_numpy, pool
from mtl_tf.data.paths import atomic_write_bytes, check_not_a_file
from training import lock

IMAGE_SETS = ("mnist", "fashion_mnist", "letters")


def pooled_arrays(task_names, split, limit=None, seed=0):
    """Pools the named 28x28 data sets (one task each): float32 images N x 28 x 28 x 1 in
    [0, 1] and labels keyed by task, -1 where an example belongs to another task."""
    unknown = [t for t in task_names if t not in IMAGE_SETS]
    if unknown:
        raise ValueError(f"`tasks` must be data sets among {list(IMAGE_SETS)}. Received "
                         f"unknown: {unknown}")
    sets = {}
    for name in task_names:
        images, labels = load_numpy(name, split)
        sets[name] = (images[:limit], labels[:limit]) if limit else (images, labels)
    pooled = pool(sets, seed=seed)
    return (pooled.images[..., None].astype(np.float32) / 255.0), pooled.labels


def hierarchy_arrays(name, split, limit=None, seed=0):
    """A coarse/fine data set (`mtl_tf.data.load_hierarchy`) as float32 images in [0, 1] and
    labels `{"fine": ..., "coarse": ...}`, shuffled with `seed` (the training split: its
    last tenth becomes the validation data), and the class names."""
    from mtl_tf.data import load_hierarchy

    images, labels, names = load_hierarchy(name, split)
    order = np.random.default_rng(seed).permutation(len(images)) if split == "train" else np.arange(len(images))
    order = order[:limit] if limit else order
    return (images[order].astype(np.float32) / 255.0), {k: v[order] for k, v in labels.items()}, names


def train(model_name, task_names, run_dir, weighting="equal", epochs=3, batch_size=128,
          learning_rate=1e-3, limit=None, seed=0, model_kwargs=None, weighting_kwargs=None,
          verbose=1, sharing=None, hierarchy=None, data=None, input_key="image", task_keys=None):
    """Trains `model_name` on the pooled data sets; returns (trainer, history, test logs).
    `sharing`: a Selective Sharing criterion, for the `selective_sharing` model.
    `hierarchy`: a coarse/fine data set (`fashion_mnist`, `pooled`, `cifar100`) for the
    `coarse_fine*` models, whose two tasks are then `fine` and `coarse` (`task_names` unused).
    `data`: a user's .npz, or `tfds:NAME` with the features `input_key` and `task_keys`
    (`training.user_data`), whose labels are the tasks (`task_names` unused); without a
    test split the test logs are empty."""
    run_dir = Path(run_dir)
    if not (isinstance(learning_rate, (int, float)) and math.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"`learning_rate` must be a finite number > 0. Received: "
                         f"learning_rate={learning_rate!r}")
    fixed = sorted({"tasks", "input_shape"} & set(model_kwargs or {}))
    if fixed:
        raise ValueError(f"The model's {' and '.join(fixed)} come from the data, not from a model "
                         f"option. Received: {', '.join(f'{k}={model_kwargs[k]!r}' for k in fixed)}")
    if hierarchy is not None and not model_name.startswith("coarse_fine"):
        raise ValueError(f"`hierarchy` gives the fine and coarse labels of the `coarse_fine` models; "
                         f"model {model_name!r} is not one. Received: hierarchy={hierarchy!r}")
    if hierarchy is None and model_name.startswith("coarse_fine"):
        raise ValueError(f"Model {model_name!r} trains a fine and a coarse task: name their data "
                         f"set with `hierarchy` (--hierarchy fashion_mnist, pooled or cifar100).")
    if data is not None and hierarchy is not None:
        raise ValueError(f"`data` and `hierarchy` exclude each other. Received: data={str(data)!r}, "
                         f"hierarchy={hierarchy!r}")
    arrays = None
    if hierarchy is not None:
        x, y, names = hierarchy_arrays(hierarchy, "train", limit, seed)
        x_test, y_test, _ = hierarchy_arrays(hierarchy, "test")
        task_names, arrays = ["fine", "coarse"], (x, y, (x_test, y_test))
    if data is not None:
        from training.user_data import load

        (x, y), test, tasks = load(data, input_key, task_keys)
        order = np.random.default_rng(seed).permutation(len(x))[:limit]  # the last tenth: validation
        arrays = (x[order], {k: v[order] for k, v in y.items()}, test)
        task_names = [t.name for t in tasks]
    config = {"model": model_name, "tasks": list(task_names), "weighting": weighting,
              "weighting_kwargs": weighting_kwargs or {}, "model_kwargs": model_kwargs or {},
              "epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
              "limit": limit, "seed": seed}
    if hierarchy is not None:
        config.update(hierarchy=hierarchy, classes={k: len(v) for k, v in names.items()},
                      input_shape=list(x.shape[1:]))
    if data is not None:
        source = str(data) if str(data).startswith("tfds:") else str(Path(data).resolve())
        config.update(data=source, task_specs=[t.get_config() for t in tasks], input_shape=list(x.shape[1:]))
        if source.startswith("tfds:"):
            config["data_keys"] = {"input": input_key, "tasks": [t.name for t in tasks]}
    if sharing is not None:
        if model_name != "selective_sharing":
            raise ValueError(f"`sharing` merges the branches of the `selective_sharing` model; "
                             f"model {model_name!r} has none. Received: sharing={sharing!r}")
        from training.selective_sharing import SelectiveSharing

        callbacks = [SelectiveSharing(sharing, seed=seed)]
        config["sharing"] = sharing
    else:
        callbacks = []
    check_not_a_file("run_dir", run_dir)
    distribution = _cluster_strategy()
    chief = distribution is None or distribution.cluster_resolver.task_id == 0
    # Only the chief writes the run, so only it holds the folder.
    with lock.hold(run_dir) if chief else contextlib.nullcontext():
        _check_run_dir(run_dir, config, chief)
        return _train(config, run_dir, distribution, chief, callbacks, verbose, arrays)


def _check_run_dir(run_dir, config, chief):
    """Refuses a run directory that holds a run with other settings, or files of anything
    else than a run (a wrong path), before anything is written."""
    config_path = run_dir / "config.json"
    if config_path.exists():
        previous = json.loads(config_path.read_text())
        changed = {k: (previous.get(k), v) for k, v in config.items()
                   if k != "epochs" and previous.get(k) != v}
        if changed:
            raise ValueError(f"`run_dir` {str(run_dir)!r} holds a run with other settings "
                             f"(old, new): {changed}. Use a new run directory.")
    elif chief and any(p.name != lock.LOCK_FILE for p in run_dir.iterdir()):
        raise ValueError(f"`run_dir` {str(run_dir)!r} is a folder of other files (no config.json "
                         f"of a run): name a new or empty folder, or a run directory to resume.")


def _train(config, run_dir, distribution, chief, callbacks, verbose, arrays=None):
    import keras

    from training.learning_to_branch import BranchSearch
    from training.trainer import Trainer
    from zoo.learning_to_branch import branch_units, tree_of

    task_names, seed = config["tasks"], config["seed"]
    limit, epochs, batch_size = config["limit"], config["epochs"], config["batch_size"]
    keras.utils.set_random_seed(seed)
    with distribution.scope() if distribution else contextlib.nullcontext():
        model = build_model(config)
    search = None
    if branch_units(model):  # a Learning to Branch search network: anneal it, keep its tree
        search = BranchSearch()
        callbacks = [*callbacks, search]
    if arrays is None:
        arrays = (*pooled_arrays(task_names, "train", limit, seed), pooled_arrays(task_names, "test"))
    x, y, test_data = arrays
    # Hold out a tenth of the (shuffled) training set for validation; the test split is
    # only evaluated once, at the end.
    held = len(x) // 10
    x, x_val = x[:-held], x[-held:]
    y, y_val = {t: v[:-held] for t, v in y.items()}, {t: v[-held:] for t, v in y.items()}
    with distribution.scope() if distribution else contextlib.nullcontext():
        trainer = Trainer(model, tasks=_tasks(config) if config.get("task_specs") else None,
                          weighting={"class_name": config["weighting"], "config": config["weighting_kwargs"]},
                          optimizer=keras.optimizers.Adam(config["learning_rate"]), run_dir=run_dir, seed=seed,
                          distribution=distribution)
    if chief:
        atomic_write_bytes(run_dir / "config.json", json.dumps(config, indent=2).encode())
    start = time.time()
    history = trainer.fit(x, y, epochs=epochs, batch_size=batch_size,
                          validation_data=(x_val, y_val), callbacks=callbacks, verbose=verbose)
    test = trainer.evaluate(test_data) if test_data is not None else {}
    if chief and search is not None:  # train it alone with --model-option tree=<this>
        atomic_write_bytes(run_dir / "tree.json", json.dumps(tree_of(trainer.model)).encode())
    if chief and test:
        atomic_write_bytes(run_dir / "test_metrics.json", json.dumps(
            {**test, "train_seconds": time.time() - start}, indent=2).encode())
    return trainer, history, test


def _cluster_strategy():
    """MultiWorkerMirroredStrategy when this process is a worker of a `TF_CONFIG`
    cluster (`mtl-tf train --workers K` starts them), else None."""
    import os

    if "TF_CONFIG" not in os.environ:
        return None
    import tensorflow as tf

    return tf.distribute.MultiWorkerMirroredStrategy()



def _tasks(config):
    """The run's tasks: the .npz's, else a multi-class task per data set (10 classes, or
    the hierarchy's)."""
    from mtl_tf.tasks import Task, as_tasks

    if config.get("task_specs"):
        return as_tasks(config["task_specs"])
    classes = config.get("classes") or {t: 10 for t in config["tasks"]}
    return tuple(Task(t, classes[t]) for t in config["tasks"])


def build_model(config, **overrides):
    import zoo

    return zoo.build(config["model"], tasks=list(_tasks(config)),
                     input_shape=tuple(config.get("input_shape", (28, 28, 1))),
                     **{**config.get("model_kwargs", {}), **overrides})


def restore_model(run_dir):
    """Rebuilds the model of `run_dir` and loads its latest checkpoint's weights."""
    import tensorflow as tf

    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"`run_dir` has no config.json; is it a run directory of "
                                f"`mtl-tf train`? Received: run_dir={str(run_dir)!r}")
    latest = tf.train.latest_checkpoint(str(run_dir / "checkpoints"))
    if latest is None:
        raise FileNotFoundError(f"`run_dir` has no checkpoint yet. Received: run_dir={str(run_dir)!r}")
    config = json.loads(config_path.read_text())
    overrides = {}
    if config.get("sharing"):  # the branches as merged when that checkpoint was written
        from training.selective_sharing import groups_at_checkpoint

        overrides["groups"] = groups_at_checkpoint(run_dir, int(latest.rsplit("-", 1)[1]))
    model = build_model(config, **overrides)
    tf.train.Checkpoint(model=model).restore(latest).expect_partial()
    return model


def predict(saved_model, images):
    """Loads image files (any size and mode, converted to the SavedModel's input: grey or
    RGB, its height and width, scaled to the range it was exported with) and runs the
    SavedModel. Returns a list of {task: (class, probability)} per image."""
    import tensorflow as tf
    from PIL import Image, UnidentifiedImageError

    import mtl_tf.export

    if not (Path(saved_model) / "saved_model.pb").is_file():
        raise FileNotFoundError(f"`SAVED_MODEL` is not a SavedModel folder (no saved_model.pb). "
                                f"Received: {str(saved_model)!r}")
    info = mtl_tf.export.serving_info(saved_model) or {}
    shape = tuple(info.get("input_shape") or (28, 28, 1))
    if len(shape) == 2:
        shape = (*shape, 0)
    if len(shape) != 3 or shape[2] not in (0, 1, 3):
        raise ValueError(f"This SavedModel takes inputs of shape {tuple(info['input_shape'])}, not "
                         f"images: `mtl-tf predict` reads grey or RGB images. Call its "
                         f"`serving_default` signature directly.")
    low, high = info.get("value_range") or (0.0, 1.0)
    batch = []
    for path in images:
        if not Path(path).is_file():
            raise FileNotFoundError(f"`IMAGE` does not name a file. Received: {path!r}")
        try:
            image = Image.open(path).convert("RGB" if shape[2] == 3 else "L")
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"`IMAGE` {path!r} is not an image file Pillow can read ({error}).") from error
        pixels = np.asarray(image.resize((shape[1], shape[0])), np.float32) / 255.0
        batch.append((low + (high - low) * pixels).reshape(shape[:2] + ((shape[2],) if shape[2] else ())))
    serve = tf.saved_model.load(str(saved_model)).signatures["serving_default"]
    outputs = serve(inputs=tf.constant(np.stack(batch)))
    results = []
    for i in range(len(batch)):
        row = {}
        for task, logits in outputs.items():
            p = tf.nn.softmax(logits[i]).numpy()
            row[task] = (int(p.argmax()), float(p.max()))
        results.append(row)
    return results
