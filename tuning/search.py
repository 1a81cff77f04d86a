"""`mtl-tf tune`: a keras-tuner search over one family, on one machine or several.

The search lives in `DIRECTORY/PROJECT` (keras-tuner's own files, plus `search.json`, the
settings it was started with): the same command run again reloads it and goes on, and a
different search space there is refused. At the end it writes `summary.md`, `summary.csv`
(the trials sorted by the objective) and `objective.png`, and exports the best model.

With `workers=K` it starts a keras-tuner chief (the oracle) and K workers as processes
of this machine, through keras-tuner's own environment variables (`KERASTUNER_TUNER_ID`,
`KERASTUNER_ORACLE_IP`, `KERASTUNER_ORACLE_PORT`); a worker that dies is started again
under the same id, and keras-tuner hands it back its unfinished trial.
"""

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from mtl_tf.data.paths import atomic_write_bytes
from mtl_tf.names import unknown_name
from training.distributed import free_ports, stop

TUNERS = {"random": "RandomSearch", "bayesian": "BayesianOptimization", "hyperband": "Hyperband"}
IMAGE_FAMILIES = ("hard_sharing", "allconv")
SETTINGS_FILE = "search.json"
RESTARTS = 3  # per worker


DATA_FAMILIES = ("hard_sharing", "architectures")  # those that take any tasks and input shape


def _check(family, tuner, objective, weightings, tasks, input_shape=None):
    import tuning

    if family not in tuning.HYPERMODELS:
        raise unknown_name("family", "FAMILY", family, tuning.HYPERMODELS)
    if tuner not in TUNERS:
        raise unknown_name("tuner", "--tuner", tuner, TUNERS)
    import keras_tuner

    from training.trainer import metric_names

    hypermodel = _hypermodel(family, tasks, weightings, input_shape)
    hp = keras_tuner.HyperParameters()
    hypermodel.build(hp)
    names = metric_names(hypermodel.tasks)
    for name in objective:
        if name not in names:
            raise unknown_name("objective", "--objective", name, names)
    # Every hyper-parameter is declared even where its condition is off: the whole space.
    space = [{k: v for k, v in h.get_config().items() if k != "conditions"} for h in hp.space]
    return hypermodel, space


def _hypermodel(family, tasks, weightings, input_shape=None):
    import tuning

    if input_shape is not None:  # a user's own data: its tasks (`Task`s) and shape
        return tuning.hypermodel(family, tasks=list(tasks), input_shape=input_shape, weightings=weightings)

    if family in ("siamese", "selective_sharing", "evolving_dae"):
        return tuning.hypermodel(family, weightings=weightings)
    if family == "coarse_fine":  # Fashion-MNIST's garments in 4 groups (paper 004's stand-in)
        return tuning.hypermodel(family, tasks={"fine": 10, "coarse": 4}, input_shape=(28, 28, 1),
                                 weightings=weightings)
    return tuning.hypermodel(family, tasks={t: 10 for t in tasks}, input_shape=(28, 28, 1),
                             weightings=weightings)


def _data(family, tasks, limit, seed, own=None):
    """(x, y, x_val, y_val): a tenth of the (shuffled) training data held out; `own`: a
    user's arrays, already shuffled."""
    if own is not None:
        x, y = own
    elif family == "siamese":
        from mtl_tf.data import load_numpy

        x, y = load_numpy("mnist_pairs", "train", n=limit or 1000, seed=seed)
    elif family == "evolving_dae":  # MNIST, a tenth labelled (paper 001's semi-supervised setting)
        from mtl_tf.data import load_numpy

        images, labels = load_numpy("mnist", "train")
        order = np.random.default_rng(seed).permutation(len(images))[:limit]
        x = images[order].astype(np.float32) / 255.0
        classes = labels[order].astype(np.int64)
        classes[np.arange(len(classes)) % 10 != 0] = -1
        y = {"classes": classes}
    elif family == "selective_sharing":  # MNIST as one-vs-all tasks (paper 002)
        from mtl_tf.data import load_numpy

        images, labels = load_numpy("mnist", "train")
        order = np.random.default_rng(seed).permutation(len(images))[:limit]
        x = images[order][..., None].astype(np.float32) / 255.0
        y = {t: (labels[order] == d).astype(np.int64) for d, t in enumerate(tasks)}
    elif family == "coarse_fine":
        from mtl_tf.data import load_hierarchy

        images, labels, _ = load_hierarchy("fashion_mnist", "train")
        order = np.random.default_rng(seed).permutation(len(images))[:limit]
        x = images[order].astype(np.float32) / 255.0
        y = {t: v[order] for t, v in labels.items()}
    else:
        from training.run import pooled_arrays

        x, y = pooled_arrays(tasks, "train", limit, seed)
    held = max(len(x) // 10, 1)
    return x[:-held], {t: v[:-held] for t, v in y.items()}, x[-held:], {t: v[-held:] for t, v in y.items()}


def _atomic_state_writes(folder):
    """keras-tuner writes its state files in place (open, then write): a search killed in
    between leaves an empty file that the next run cannot read. From now on each goes
    through a temporary file and a rename; a tuner file left empty by an earlier run is
    rewritten (a tuner's own state is `{}`, the search's is in oracle.json and the trials)."""
    from keras_tuner.src import utils

    if not getattr(utils.save_json, "atomic", False):
        def save_json(path, obj):
            text = json.dumps(obj)
            atomic_write_bytes(Path(path), text.encode())
            return text

        save_json.atomic = True
        utils.save_json = save_json
    for path in Path(folder).glob("*.json"):
        if path.name in ("oracle.json", SETTINGS_FILE):
            continue
        try:
            json.loads(path.read_text())
        except (ValueError, OSError):
            atomic_write_bytes(path, b"{}")


def _tuner(kind, hypermodel, objective, max_trials, epochs, folder, seed):
    import keras_tuner

    import tuning

    _atomic_state_writes(folder)

    base = getattr(keras_tuner, TUNERS[kind])

    class Timed(base):
        """Records each trial's wall time beside its keras-tuner files."""

        def run_trial(self, trial, *args, **kwargs):
            start = time.time()
            result = super().run_trial(trial, *args, **kwargs)
            atomic_write_bytes(Path(self.get_trial_dir(trial.trial_id)) / "seconds.json",
                               json.dumps(round(time.time() - start, 1)).encode())
            return result

        def reload(self):
            super().reload()
            # keras-tuner saves the oracle before it lets go of a finished trial, so a search killed
            # in between would send that trial back for a rerun: its own file says it is done.
            oracle = self.oracle
            done = [t for t in oracle._retry_queue if oracle.trials[t].status == "COMPLETED"]
            oracle._retry_queue = [t for t in oracle._retry_queue if t not in done]
            oracle.end_order += [t for t in done if t not in oracle.end_order]

    budget = {"max_epochs": epochs, "factor": 3} if kind == "hyperband" else {"max_trials": max_trials}
    return Timed(hypermodel, objective=tuning.objective(objective if len(objective) > 1 else objective[0]),
                 directory=str(folder.parent), project_name=folder.name, seed=seed, overwrite=False,
                 max_consecutive_failed_trials=max(3, max_trials), **budget)


def tune(family, tasks, directory, project, tuner="random", max_trials=10, epochs=3,
         objective="val_mean_accuracy", weightings=None, limit=None, batch_size=128, seed=0,
         export=None, workers=0, role=None, log=print, data=None, input_key="image", task_keys=None):
    """Runs (or continues) the search and returns the summary rows, best first. `data`: a
    user's .npz or `tfds:NAME` with its features `input_key` and `task_keys`
    (`training.user_data`), whose labels are the tasks (`tasks` unused), for the families
    that take any tasks (`DATA_FAMILIES`)."""
    from training.trainer import _check_positive_int

    for name, value in {"max_trials": max_trials, "epochs": epochs, "batch_size": batch_size,
                        "limit": 1 if limit is None else limit}.items():
        _check_positive_int(name, value)
    if export and Path(export).exists() and not (Path(export) / "saved_model.pb").is_file():
        raise ValueError(f"`export` exists and is not a SavedModel folder: the best model would "
                         f"replace it. Name a new folder. Received: export={str(export)!r}")
    objective = [objective] if isinstance(objective, str) else list(objective)
    if family == "siamese":
        tasks = ["compare", "digit_a", "digit_b"]
    if family == "selective_sharing":
        tasks = [f"digit_{d}" for d in range(10)]
    if family == "evolving_dae":
        tasks = ["classes", "reconstruction_1"]
    if family == "coarse_fine":
        tasks = ["fine", "coarse"]
    own = None
    if data is not None:
        from training.user_data import load

        if family not in DATA_FAMILIES:
            raise ValueError(f"`data` gives tasks of its own; family {family!r} has its paper's tasks. "
                             f"Families that take any tasks: {list(DATA_FAMILIES)}. Received: family={family!r}")
        (x, y), _, task_specs = load(data, input_key, task_keys)
        order = np.random.default_rng(seed).permutation(len(x))[:limit]
        own = (x[order], {k: v[order] for k, v in y.items()})
        tasks = [t.name for t in task_specs]
    hypermodel, space = _check(family, tuner, objective, weightings, task_specs if own else tasks,
                               tuple(own[0].shape[1:]) if own else None)
    folder = Path(directory) / project
    settings = {"family": family, "tasks": list(tasks), "tuner": tuner, "max_trials": max_trials,
                "epochs": epochs, "objective": objective, "weightings": hypermodel.weightings,
                "limit": limit, "batch_size": batch_size, "seed": seed, "space": space,
                **({"data": str(data) if str(data).startswith("tfds:") else str(Path(data).resolve())}
                   if data is not None else {})}
    _guard(folder, settings, write=role in (None, "chief"))
    if workers and role is None:
        command = ["tune", family, "--tasks", ",".join(tasks), "--tuner", tuner, "--max-trials",
                   str(max_trials), "--epochs", str(epochs), "--objective", ",".join(objective),
                   "--directory", str(directory), "--project", project, "--batch-size", str(batch_size),
                   "--seed", str(seed), "--weightings", ",".join(hypermodel.weightings)]
        command += ["--data", str(data), "--input-key", input_key] if data is not None else []
        command += ["--task-keys", ",".join(task_keys)] if task_keys else []
        _run_distributed(command + ["--limit", str(limit) if limit else "all"], workers, log)
    else:
        x, y, x_val, y_val = _data(family, tasks, limit, seed, own)
        search = _tuner(tuner, hypermodel, objective, max_trials, epochs, folder, seed)
        log(f"search {folder}: {family} on {', '.join(tasks)}, {tuner}, objective {', '.join(objective)}"
            + (f" ({role})" if role else ""))
        # A progress bar on a terminal, one line per epoch in a log (and for workers).
        verbose = 1 if sys.stdout.isatty() and role is None else 2
        search.search(x, y, validation_data=(x_val, y_val), epochs=epochs, batch_size=batch_size,
                      verbose=verbose)
        if role is not None:
            return []
    if workers and role is None:  # the chief wrote the search: read it back
        search = _tuner(tuner, hypermodel, objective, max_trials, epochs, folder, seed)
    rows = summarise(search, folder, objective)
    log(_table(rows))
    log(f"summary: {folder / 'summary.md'}, {folder / 'summary.csv'}, {folder / 'objective.png'}")
    if export and rows:
        import mtl_tf.export

        best = search.get_best_models(1)[0]
        value_range = None if data is not None else (0.0, 255.0) if family == "siamese" else (0.0, 1.0)
        log(f"best model (trial {rows[0]['trial']}) exported: "
            f"{mtl_tf.export.save(best, export, overwrite=True, value_range=value_range)}")
    return rows


def _guard(folder, settings, write):
    settings = json.loads(json.dumps(settings))  # as it reads back: lists, not tuples
    path = folder / SETTINGS_FILE
    if path.is_file():
        there = json.loads(path.read_text())
        changed = {k: (there.get(k), v) for k, v in settings.items() if there.get(k) != v}
        if changed:
            raise ValueError(f"{str(folder)!r} holds a search with another search space or settings "
                             f"(there, asked): {changed}. Use another --project or --directory.")
    elif write:
        atomic_write_bytes(path, json.dumps(settings, indent=2).encode())


def summarise(search, folder, objective):
    """The trials sorted best first, written as `summary.md`, `summary.csv`, `objective.png`."""
    direction = search.oracle.objective.direction if len(objective) == 1 else "min"
    rows = []
    space = [h.name for h in search.oracle.hyperparameters.space]  # the search space's order
    for trial_id, trial in sorted(search.oracle.trials.items()):
        seconds = Path(search.get_trial_dir(trial_id)) / "seconds.json"
        rows.append({"trial": trial_id, "status": trial.status, "score": trial.score,
                     "seconds": json.loads(seconds.read_text()) if seconds.is_file() else None,
                     "hyperparameters": {k: trial.hyperparameters.values[k] for k in space
                                         if k in trial.hyperparameters.values}})
    order = [r for r in rows if r["score"] is not None]
    order.sort(key=lambda r: r["score"], reverse=direction == "max")
    rows = order + [r for r in rows if r["score"] is None]
    atomic_write_bytes(folder / "summary.md", (_table(rows, objective) + "\n").encode())
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["trial", "status", "objective", "seconds", "hyperparameters"])
    for r in rows:
        writer.writerow([r["trial"], r["status"], r["score"], r["seconds"], json.dumps(r["hyperparameters"])])
    atomic_write_bytes(folder / "summary.csv", text.getvalue().encode())
    _plot(rows, folder / "objective.png", objective)
    return rows


def _format(value):
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _table(rows, objective=("objective",)):
    lines = [f"| trial id | {' + '.join(objective)} | status | seconds | hyper-parameters |",
             "|---|---|---|---|---|"]
    for r in rows:
        hps = ", ".join(f"{k}={_format(v)}" for k, v in r["hyperparameters"].items())
        lines.append(f"| {r['trial']} | {_format(r['score']) if r['score'] is not None else '-'} | "
                     f"{r['status']} | {r['seconds'] if r['seconds'] is not None else '-'} | {hps} |")
    return "\n".join(lines)


def _plot(rows, path, objective):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mtl_tf.data.paths import atomic_path

    done = sorted((r for r in rows if r["score"] is not None), key=lambda r: r["trial"])
    fig, ax = plt.subplots(figsize=(7, 4))
    colours = {}
    for i, r in enumerate(done):
        method = r["hyperparameters"].get("weighting", "-")
        colours.setdefault(method, f"C{len(colours) % 10}")
        ax.scatter(i, r["score"], color=colours[method], label=method if method not in ax.get_legend_handles_labels()[1] else None)
    ax.set_xlabel("trial (in the order run)")
    ax.set_ylabel(" + ".join(objective))
    ax.set_title("Objective per trial, coloured by weighting method")
    if done:
        ax.legend(fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def _run_distributed(arguments, workers, log):
    """Starts the chief and `workers` workers (`mtl-tf` with `arguments` and `--role`)
    on loopback and supervises them (`_supervise`)."""
    (port,) = free_ports(1)
    command = [sys.executable, "-m", "training.cli", *arguments]
    env = {**os.environ, "KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(port)}

    def start(role, tuner_id):
        return subprocess.Popen([*command, "--role", role], env={**env, "KERASTUNER_TUNER_ID": tuner_id})

    chief = start("chief", "chief")
    time.sleep(2)  # the oracle's server first
    running = {f"tuner{k}": start("worker", f"tuner{k}") for k in range(workers)}
    log(f"chief and {workers} workers started on 127.0.0.1:{port}")
    _supervise(chief, running, lambda tuner_id: start("worker", tuner_id), log)


def _supervise(chief, running, restart, log, poll=0.5):
    """Waits for the chief and the workers `running` ({tuner id: process}); a worker that
    dies while the chief still hands out trials is started again under its own id
    (`restart(tuner_id)`), at most RESTARTS times. Ctrl-C stops them all."""
    restarts = dict.fromkeys(running, 0)
    try:
        while running:
            if chief.poll() is not None:
                # The chief serves until every trial has ended; a worker still running then
                # has nothing left to do, and one started after it left would wait up to an
                # hour for a server that is gone.
                break
            for tuner_id, process in list(running.items()):
                code = process.poll()
                if code is None:
                    continue
                if code == 0 or chief.poll() is not None:
                    del running[tuner_id]  # done, or it found the chief gone (every trial ended)
                elif restarts[tuner_id] < RESTARTS:
                    restarts[tuner_id] += 1
                    log(f"worker {tuner_id} ended with code {code}: started again "
                        f"({restarts[tuner_id]}/{RESTARTS}), it resumes its trial")
                    running[tuner_id] = restart(tuner_id)
                else:
                    raise RuntimeError(f"Worker {tuner_id} failed {restarts[tuner_id] + 1} times "
                                       f"(last code {code}); the search stopped.")
            time.sleep(poll)
        chief.wait(timeout=120)
    finally:
        stop([chief, *running.values()])
    if chief.returncode not in (0, None, -signal.SIGINT):
        raise RuntimeError(f"The tuning chief ended with code {chief.returncode}.")

