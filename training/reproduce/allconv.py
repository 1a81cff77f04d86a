"""Paper 000's Table 3: single-task all-convolution nets, and the same nets initialised
from multi-task pre-training on pooled MNIST-like sets (F+N, M+F, M+N, F+N+M).

Protocol (the paper's): a pre-training net with one joint output of 10 T scores is trained
on the pooled training sets with zero-padded one-hot labels; each task's single-task net
starts from its shared layers and its slice of the output layer and is retrained on the
task alone. Every training: Adam, batch 100, 1e-3 for 25 epochs then 1e-5 for 25, each
stage decayed per epoch by 1 / (1 + d n), d = rate / 25 (`StagedInverseTimeDecay`).

Data differences, said in the report's first lines: NotMNIST (N) is replaced by letters
A-J rendered from fonts (`mtl_tf.data.letters`), so the letters cells have no paper
value; 5,000 images of each training set are held out to choose epochs (the paper trains
on all 60,000 and does not say how it chose).
"""

import json
import os
import time
from pathlib import Path

import keras
import numpy as np

import zoo
from mtl_tf.data import load_numpy, pool
from mtl_tf.data.paths import atomic_path, atomic_write_bytes
from mtl_tf.lr_schedules import StagedInverseTimeDecay, plot_schedule
from training.callbacks import Evaluate
from training.reproduce.common import (
    Workdir, check_only, check_profile, device, format_seconds, machine_line, read_history,
    run_path, versions, write_json,
)
from training.trainer import Trainer
from zoo.allconv import transfer_to_single_task

PAPER = "000_be4b81f57926d9ef.txt"
NAME = "allconv"
TASKS = ("mnist", "letters", "fashion_mnist")  # Table 3's rows
SHORT = {"mnist": "M", "letters": "N", "fashion_mnist": "F"}
# Table 3's columns after single-task, in its order; a combination's tasks in its order.
COMBOS = (("fashion_mnist", "letters"), ("mnist", "fashion_mnist"), ("mnist", "letters"),
          ("fashion_mnist", "letters", "mnist"))
PAPER_TABLE = {
    "mnist": {"single": 0.9956, "M+F": 0.9971, "M+N": 0.9970, "F+N+M": 0.9970},
    "letters": {"single": 0.9722, "F+N": 0.9738, "M+N": 0.9740, "F+N+M": 0.9746},
    "fashion_mnist": {"single": 0.9432, "F+N": 0.9520, "M+F": 0.9518, "F+N+M": 0.9525},
}
VALIDATION = 5000
BATCH_SIZE = 100
PROFILES = {
    # The paper's: every training 25 + 25 epochs on the full sets.
    "full": {"train": None, "val": None, "test": None, "stages": (25, 25)},
    # Same shape, shrunk to finish in 30 minutes on 2 cores: fewer training, validation
    # and test images per task, 3 epochs at 1e-3 and 1 at 1e-5. The pre-trainings pool
    # fewer images per task ("pretrain_train"), which pays for the fourth epoch: a third
    # epoch at 1e-3 is what lifts single-task MNIST past 98.5% (98.36% with 2 + 1).
    "quick": {"train": 28000, "pretrain_train": 8000, "val": 2000, "test": 5000, "stages": (3, 1)},
    # `make demo`: the quick profile's shape, and only the single-task nets and the tri-task
    # pre-training with its transfers (Table 3's first and last columns). Its pre-training
    # pools every training image of the three tasks (the quick profile pools 8,000 per task
    # and its F+N+M transfers gain only 0.02 to 0.30 points).
    "demo": {"train": 36000, "val": 2000, "test": 5000, "stages": (3, 1),
             "settings": ("single mnist", "single fashion_mnist", "single letters", "pretrain F+N+M",
                          "transfer F+N+M mnist", "transfer F+N+M fashion_mnist",
                          "transfer F+N+M letters")},
}


def combo_name(combo):
    return "+".join(SHORT[t] for t in combo)


def profile_settings(profile):
    """The settings `profile` trains and reports, in their order (all of `settings()` unless
    the profile names some)."""
    names = PROFILES[profile].get("settings")
    return [s for s in settings() if names is None or s[0] in names]


def _protocol(profile):
    return {k: list(v) if isinstance(v, tuple) else v for k, v in PROFILES[profile].items()}


def settings():
    """(name, kind, tasks, source) in the order they run: the full profile's priorities
    first (single-task MNIST and Fashion-MNIST, the tri-task pre-training and its
    transfers), so a partial full run holds the most telling cells."""
    order = [("single mnist", "single", ("mnist",), None),
             ("single fashion_mnist", "single", ("fashion_mnist",), None)]
    for combo in (COMBOS[3], COMBOS[0], COMBOS[1], COMBOS[2]):
        pre = f"pretrain {combo_name(combo)}"
        order.append((pre, "pretrain", combo, None))
        order += [(f"transfer {combo_name(combo)} {t}", "transfer", (t,), pre) for t in combo]
        if combo == COMBOS[3]:
            order.append(("single letters", "single", ("letters",), None))
    return order


def arrays(task, split, limit):
    """Images N x 28 x 28 x 1 in [0, 1] and labels; `split` is train, val or test."""
    images, labels = load_numpy(task, "test" if split == "test" else "train")
    if split == "train":
        images, labels = images[:-VALIDATION], labels[:-VALIDATION]
    elif split == "val":
        images, labels = images[-VALIDATION:], labels[-VALIDATION:]
    if limit:
        images, labels = images[:limit], labels[:limit]
    return images[..., None].astype(np.float32) / 255.0, labels.astype(np.int64)


def joint_arrays(tasks, split, limit, seed):
    """The pooled set of `tasks`: images and the joint label 10 t + class (the index of
    the zero-padded one-hot label), shuffled with `seed`."""
    sets = {}
    for task in tasks:
        x, y = arrays(task, split, limit)
        sets[task] = (x[..., 0], y)
    pooled = pool(sets, seed=seed)
    return pooled.images[..., None], pooled.joint.argmax(axis=1).astype(np.int64)


def train_setting(name, kind, tasks, source, profile, workdir, seed, log):
    """Trains one setting (resuming its checkpoints) and returns its record."""
    limits = PROFILES[profile]
    stages = limits["stages"]
    run_dir = workdir.out / "train" / _slug(name)
    if kind == "pretrain":
        x, y = joint_arrays(tasks, "train", limits.get("pretrain_train", limits["train"]), seed)
        val = joint_arrays(tasks, "val", limits["val"], seed)
        test = joint_arrays(tasks, "test", limits["test"], seed)
        task_specs, label = {"joint": 10 * len(tasks)}, "joint"
    else:
        (task,) = tasks
        x, y = arrays(task, "train", limits["train"])
        val, test = arrays(task, "val", limits["val"]), arrays(task, "test", limits["test"])
        task_specs, label = {task: 10}, task
    steps = -(-len(x) // BATCH_SIZE)
    schedule = StagedInverseTimeDecay(steps, rates=(1e-3, 1e-5), epochs=stages)
    keras.utils.set_random_seed(seed)
    if kind == "transfer":
        model, report = transfer_to_single_task(load_model(workdir.out, source, workdir.records), tasks[0])
        log(f"    initialised from {source}: copied {report['copied']}, sliced {report['sliced']}")
    else:
        model = zoo.build("allconv", tasks={t: 10 for t in tasks})
    trainer = Trainer(model, tasks=task_specs, optimizer=keras.optimizers.Adam(schedule),
                      run_dir=run_dir, seed=seed)
    start = time.time()
    done = trainer.restore()
    if done:
        log(f"    resuming after epoch {done}")
    epochs = sum(stages)
    trainer.fit(x, {label: y}, epochs=epochs, batch_size=BATCH_SIZE, validation_data=(val[0], {label: val[1]}),
                callbacks=[Evaluate((test[0], {label: test[1]}), batch_size=500), EpochLog(log, epochs, label),
                           # A sitting cut off mid-setting keeps its wall time up to its last epoch.
                           keras.callbacks.LambdaCallback(on_epoch_end=lambda *_: workdir.touch())],
                verbose=0)
    seconds = time.time() - start
    history = read_history(run_dir / "history.csv", missing=float("nan"))
    val_acc, test_acc = history[f"val_{label}_accuracy"], history[f"test_{label}_accuracy"]
    chosen = int(np.argmax(val_acc))
    record = {"setting": name, "kind": kind, "tasks": list(tasks), "source": source,
              "epochs": epochs, "train_images": len(x), "seconds_this_sitting": round(seconds, 1),
              "images_per_second": round(len(x) * (epochs - done) / seconds, 1) if epochs > done else None,
              "test_accuracy_last_epoch": test_acc[-1], "test_accuracy": test_acc[chosen],
              "chosen_epoch": chosen + 1, "history": history}
    if kind == "pretrain":
        record["per_task_test_accuracy"] = _per_task_accuracy(model, tasks, limits["test"])
    save_weights(model, weights_path(workdir.out, name))
    if kind == "pretrain" and workdir.records:
        # Transfers start from it, on whichever machine trains them (about 1.4 MB).
        save_weights(model, weights_path(workdir.records, name))
    return record, model


def _slug(name):
    return name.replace(" ", "_").replace("+", "")


def weights_path(out, name):
    return Path(out) / "models" / f"{_slug(name)}.weights.h5"


def save_weights(model, path):
    """`model.save_weights`, atomically (Keras wants the `.weights.h5` suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".partial-{path.name}")
    try:
        model.save_weights(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_model(out, name, records=None):
    """The trained net of setting `name`, rebuilt and loaded from `out/models/`, or from
    `records/models/` (pre-trainings only) when `out` has none."""
    tasks = source_tasks(name) if name.startswith("pretrain") else (name.split()[-1],)
    model = zoo.build("allconv", tasks={t: 10 for t in tasks})
    path = weights_path(out, name)
    if not path.exists() and records and weights_path(records, name).exists():
        path = weights_path(records, name)
    model.load_weights(path)
    return model


def source_tasks(pretrain_name):
    short = {v: k for k, v in SHORT.items()}
    return tuple(short[s] for s in pretrain_name.split(" ")[1].split("+"))


def _per_task_accuracy(model, tasks, limit):
    """Each task's test accuracy of a joint model, read from its own 10 scores."""
    result = {}
    for task in tasks:
        x, y = arrays(task, "test", limit)
        scores = model.predict(x, batch_size=500, verbose=0)[task]
        result[task] = float((scores.argmax(axis=1) == y).mean())
    return result


class EpochLog(keras.callbacks.Callback):
    def __init__(self, log, epochs, label):
        super().__init__()
        self.log, self.epochs, self.label = log, epochs, label
        self.start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        self.log(f"    epoch {epoch + 1}/{self.epochs}: train {logs[f'{self.label}_accuracy']:.4f}, "
                 f"val {logs[f'val_{self.label}_accuracy']:.4f}, test {logs[f'test_{self.label}_accuracy']:.4f} "
                 f"({time.time() - self.start:.0f} s)")
        self.start = time.time()


def reproduce(profile, out, runs=None, seed=0, only=None, log=print, records=None):
    """Trains every setting not finished in `out` or `records` (a folder of committed run
    records, see `common.Workdir`), resuming a setting's checkpoints, then writes
    `results.json`, `report.md`, `lr_schedule.png` and `tsne.png`."""
    check_profile(PROFILES, profile)
    if runs not in (None, 1):
        raise ValueError(f"Paper 000 reports one run per setting; `runs` must be 1. Received: runs={runs!r}")
    all_settings = profile_settings(profile)
    check_only(only, [s[0] for s in all_settings])
    workdir = Workdir(out, {"name": NAME, "profile": profile, "seed": seed, **_protocol(profile)}, records)
    log(f"paper 000, profile {profile}: {len(all_settings)} trainings into {workdir.out}")
    records = {}
    for i, (name, kind, tasks, source) in enumerate(all_settings, 1):
        record = workdir.finished(name, 0)
        if record is None and (only is None or name in only):
            if kind == "transfer" and source not in records:  # pre-trainings come first
                log(f"[{i}/{len(all_settings)}] {name}: skipped, {source} is not finished")
                continue
            log(f"[{i}/{len(all_settings)}] {name}")
            record, _ = train_setting(name, kind, tasks, source, profile, workdir, seed, log)
            workdir.save_run(name, 0, record)
            log(f"    test accuracy {record['test_accuracy_last_epoch']:.4f} (last epoch), "
                f"{record['test_accuracy']:.4f} (epoch {record['chosen_epoch']}, chosen on validation)")
        if record is not None:
            records[name] = record
    workdir.close()
    results = summarise(records, profile, seed, workdir.wall_seconds)
    results["trained_on"] = workdir.trained_on
    write_json(workdir.out / "results.json", results)
    stages = PROFILES[profile]["stages"]
    plot_schedule(StagedInverseTimeDecay(1, rates=(1e-3, 1e-5), epochs=stages), sum(stages),
                  workdir.out / "lr_schedule.png", title=f"Learning-rate scheme ({profile} profile)")
    if "single mnist" in records and "transfer F+N+M mnist" in records:
        plot_tsne(workdir, seed, log, n=PROFILES[profile].get("tsne_images", 1000))
    report = render_report(results, records)
    atomic_write_bytes(workdir.out / "report.md", report.encode())
    log(report)
    return results


def _cell_name(task, column):
    if column == "single":
        return f"single {task}"
    return f"transfer {column} {task}"


def _has_cell(task, column):
    """Whether Table 3 has a cell for `task` in `column` (a combination without the task
    has none)."""
    return column == "single" or SHORT[task] in column.split("+")


def _columns(profile):
    """Table 3's columns that `profile` trains (a demo shows only those)."""
    names = {s[0] for s in profile_settings(profile)}
    return [column for column in ["single"] + [combo_name(c) for c in COMBOS]
            if any(_cell_name(task, column) in names for task in TASKS)]


def summarise(records, profile, seed, wall_seconds):
    rows = []
    for task in TASKS:
        for column in _columns(profile):
            if not _has_cell(task, column):
                continue
            record = records.get(_cell_name(task, column))
            paper = None if task == "letters" else PAPER_TABLE[task][column]
            for metric in ("test_accuracy_last_epoch", "test_accuracy"):
                rows.append({"setting": column, "task": task, "metric": metric,
                             "ours": record[metric] if record else None, "ours_std": None,
                             "runs": 1 if record else 0,
                             "paper": paper if metric == "test_accuracy_last_epoch" else None})
    return {"paper": PAPER, "name": NAME, "profile": profile, "device": device(),
            "versions": versions(), "wall_seconds": round(wall_seconds, 1), "seed": seed,
            "protocol": _protocol(profile),
            "batch_size": BATCH_SIZE, "validation_per_task": VALIDATION,
            "trainings": {name: {k: r[k] for k in ("epochs", "train_images", "images_per_second",
                                                   "test_accuracy_last_epoch", "test_accuracy",
                                                   "chosen_epoch") if k in r}
                          | ({"per_task_test_accuracy": r["per_task_test_accuracy"]}
                             if "per_task_test_accuracy" in r else {})
                          for name, r in records.items()},
            "rows": rows}


def render_report(results, records):
    profile = results["profile"]
    columns = _columns(profile)
    protocol = results["protocol"]
    lines = [
        "# Paper 000 reproduced: all-convolution nets with multi-task pre-training",
        "",
        "**Data differ from the paper's.** N is *not* NotMNIST: it is letters A-J rendered "
        "from 544 fonts of Debian packages (NotMNIST-like, cleaner and easier), so the "
        "letters row has no paper value to compare with (the paper's figures are shown "
        "for context only). MNIST and Fashion-MNIST are the real sets. 5,000 images of each "
        "training set are held out as validation data.",
        "",
        f"- Profile: **{profile}**. " + (
            "The paper's protocol: every training 25 epochs at 1e-3 and 25 at 1e-5, Adam, "
            "batch 100, on all training images but the held-out 5,000 per task."
            if profile == "full" else
            f"The paper's protocol shrunk: {protocol['train']:,} training images per task"
            + (f" ({protocol['pretrain_train']:,} per task pooled in a pre-training), "
               if "pretrain_train" in protocol else ", ") +
            f"{protocol['stages'][0]} epoch(s) at 1e-3 then {protocol['stages'][1]} at 1e-5 "
            f"(paper: 25 + 25), test on the first {protocol['test']:,} test images per task; "
            "Adam, batch 100, the same net."
            + (" Only Table 3's " + " and ".join("single-task" if c == "single" else c for c in columns)
               + " columns are trained." if "settings" in protocol else "")),
        "- Net: `zoo.allconv` (All-CNN-C's layer order, widths 32/64; see its docstring). "
        "Pre-training: the joint output of 10 T scores, one softmax, zero-padded one-hot "
        "labels; transfer: trunk copied, the task's 10 columns of the output layer copied, "
        "then retrained on the task alone with the same schedule.",
        f"- One run per cell (as the paper), seed {results['seed']}.",
        f"- Machine: {machine_line(results)}. Versions: " + ", ".join(
            f"{k} {v}" for k, v in results["versions"].items()) + ".",
        f"- Wall time: {format_seconds(results['wall_seconds'])} over all sittings.",
        "",
    ]
    restored = [name for name, record in records.items() if record.get("note")]
    if restored:
        lines += [f"Records restored by hand from an earlier published report (their per-epoch "
                  f"histories and weights stayed on the machine that trained them): "
                  f"{', '.join(restored)}. Their values are copied unchanged.", ""]
    repaired = {name: record["repaired"] for name, record in records.items() if record.get("repaired")}
    if repaired:
        lines += ["Records repaired by hand: " + "; ".join(f"{name}: {why}" for name, why in repaired.items())
                  + ".", ""]
    missing = [name for name, *_ in profile_settings(profile) if name not in records]
    if missing:
        lines += [f"**Partial: not yet trained: {', '.join(missing)}.**", ""]
    lines += ["## Table 3: test accuracy", "",
              "Ours at the last epoch (the paper reports one number per cell and no selection) "
              "and, in brackets, at the epoch chosen on the validation images.", "",
              "| dataset | " + " | ".join(["single-task" if c == "single" else c for c in columns]) + " |",
              "|---" * (len(columns) + 1) + "|"]
    for task in TASKS:
        ours, paper, diff = [], [], []
        for column in columns:
            if not _has_cell(task, column):
                ours.append("-"), paper.append("-"), diff.append("-")
                continue
            record = records.get(_cell_name(task, column))
            value = PAPER_TABLE[task][column]
            ours.append(f"{100 * record['test_accuracy_last_epoch']:.2f}% "
                        f"({100 * record['test_accuracy']:.2f}%)" if record else "missing")
            paper.append(f"{100 * value:.2f}%" + (" (NotMNIST)" if task == "letters" else ""))
            diff.append("missing" if not record else "n/a (other data)" if task == "letters" else
                        f"{100 * (record['test_accuracy_last_epoch'] - value):+.2f} pts")
        title = {"mnist": "MNIST", "letters": "letters (rendered)", "fashion_mnist": "Fashion-MNIST"}[task]
        lines += [f"| {title} (ours) | " + " | ".join(ours) + " |",
                  f"| {title} (paper) | " + " | ".join(paper) + " |",
                  "| difference | " + " | ".join(diff) + " |"]
    lines += ["", "## Pre-training nets", "",
              "| pre-training | images | test accuracy, joint 10 T-way | per task (own 10 scores) | images/s, in its last sitting |",
              "|---|---|---|---|---|"]
    for name, kind, tasks, _ in settings():
        if kind == "pretrain" and name in records:
            r = records[name]
            per_task = ", ".join(f"{SHORT[t]} {100 * a:.2f}%" for t, a in r["per_task_test_accuracy"].items())
            lines.append(f"| {name.split()[1]} | {r['train_images']:,} | "
                         f"{100 * r['test_accuracy_last_epoch']:.2f}% | {per_task} | "
                         f"{r['images_per_second'] or '-'} |")
    lines += ["", "## Figures", "", "Figure 4, the learning-rate scheme: ![lr](lr_schedule.png)", ""]
    if "single mnist" in records and "transfer F+N+M mnist" in records:
        lines += ["Figure 6, t-SNE of the trunk's output (global average of the last shared "
                  "feature maps) on 1,000 MNIST test images, with and without multi-task "
                  "pre-training: ![t-SNE](tsne.png)", ""]
    return "\n".join(lines) + "\n"


def plot_tsne(workdir, seed, log, n=1000):
    """Figure 6: t-SNE of the trunk's output on `n` MNIST test images, the single-task net
    against the one pre-trained on F+N+M. The figure is kept with the committed records:
    where the two nets were trained on another machine (their weights are not
    committed), the records' copy is used."""
    target, kept = workdir.out / "tsne.png", workdir.records and workdir.records / "tsne.png"
    names = ("transfer F+N+M mnist", "single mnist")
    if not all(weights_path(workdir.out, name).exists() for name in names):
        if kept and kept.exists():
            atomic_write_bytes(target, kept.read_bytes())
        else:
            log("t-SNE figure not drawn: the weights of its two nets are not in this folder")
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    x, y = arrays("mnist", "test", n)
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    for ax, name, title in zip(axes, names, ("with multi-task pre-training (F+N+M)",
                                             "without (single-task)")):
        model = load_model(workdir.out, name)
        features = keras.ops.mean(model.get_layer("trunk").predict(x, batch_size=500, verbose=0), axis=(1, 2))
        embedded = TSNE(n_components=2, random_state=seed, init="pca").fit_transform(np.asarray(features))
        points = ax.scatter(embedded[:, 0], embedded[:, 1], c=y, cmap="tab10", s=4)
        ax.set_title(title)
        ax.set_xticks([]), ax.set_yticks([])
    fig.colorbar(points, ax=axes, ticks=range(10), label="digit")
    fig.suptitle("Paper 000, Figure 6: t-SNE of the last shared layer on MNIST test images")
    with atomic_path(target) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    if kept:
        atomic_write_bytes(kept, target.read_bytes())



def demo(out, saved_models, log=print):
    """`make demo`: single-task baselines, the tri-task pre-training and its three
    transfers, in a few minutes; prints the table and exports the four multi-task and
    transferred nets as SavedModels into `saved_models`. Returns their paths."""
    import mtl_tf.export

    from mtl_tf.plots import plot_history

    results = reproduce("demo", out, log=log)
    history = json.loads(run_path(out, "pretrain F+N+M", 0).read_text())["history"]
    plot = plot_history(history, ["joint"], Path(out) / "pretrain_learning_curves.png",
                        title="Pre-training on F+N+M, joint output")
    log(f"pre-training learning curves: {plot}")
    paths = []
    for name in PROFILES["demo"]["settings"][3:]:
        target = Path(saved_models) / f"allconv_{_slug(name)}"
        paths.append(mtl_tf.export.save(load_model(out, name), target, overwrite=True, value_range=(0.0, 1.0)))
        log(f"SavedModel of {name}: {target}")
    return results, paths
