"""Paper 002 (Selective Sharing) on MNIST: the STL baseline, the MTL baseline and Selective
Sharing with each criterion; then the same protocol on Fashion-MNIST and the letters. Beside
them (`paper` null), the zoo's other learned structure, Learning to Branch, in the same
search space (see `LTB`).

Protocol (section 4): `train50k` / `val10k` / `test` (Fashion-MNIST and the letters: the
first 50,000 / last 10,000 of their training sets, and their test sets); pixels / 255, no
other preprocessing; ten one-vs-all binary tasks (the STL baseline: one 10-way softmax);
SGD, learning rate 0.02, momentum 0.5, batch 64, 30 epochs; the test accuracy of the epoch
with the best validation accuracy (the paper tests "the best performing validation
model"). A digit is predicted as the task whose sigmoid is the highest. Run i of every
setting starts from the same seed, so settings are compared on paired initialisations.
"""

import dataclasses
import functools
import time

import keras
import numpy as np

import zoo
from mtl_tf.data import load_numpy
from mtl_tf.data.paths import atomic_path, atomic_write_bytes
from training.reproduce.common import (
    Workdir, check_only, check_profile, device, epoch_log, format_seconds, machine_line, mean_std,
    run_order, run_settings, status, status_line, versions, write_json,
)
from training.learning_to_branch import BranchSearch, format_tree
from training.selective_sharing import CRITERIA, SelectiveSharing
from training.trainer import Trainer
from zoo.selective_sharing import groups_of, one_vs_all_tasks, predict_digits

PAPER = "002_a980f6a32678738a.txt"
NAME = "selective_sharing"
PROFILES = {
    "full": {"runs": 3, "epochs": 30, "train": None, "steps_per_epoch": None, "data": None},
    # MNIST only, in epochs of a sixth of the training set: two passes in 12 epochs, so
    # grouping (clustered once an epoch, locked after 3 epochs without a change) decides
    # within about the first half and the merged branches have the rest to recover, as in
    # the full profile (locks at epochs 3 to 14 of 30).
    "quick": {"runs": 3, "epochs": 12, "train": None, "steps_per_epoch": 131, "data": ("mnist",)},
}
BATCH_SIZE = 64
LEARNING_RATE = 0.02
MOMENTUM = 0.5
DATASETS = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "letters": "letters A-J (rendered from fonts)"}
CLASS_NAMES = {
    "mnist": [str(d) for d in range(10)],
    "fashion_mnist": ["T-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                      "sneaker", "bag", "boot"],
    "letters": list("ABCDEFGHIJ"),
}
METHODS = ("stl", "mtl") + CRITERIA + ("learning_to_branch",)
# Learning to Branch (Guo et al., ICML 2020) over Selective Sharing's layers (5x5 valid
# convolutions of 20 and 40 filters with batch norm, the shared 640-unit layer, branches of
# 100 then 50 units): one node up to the shared layer, then 10 nodes at each branch layer,
# so its trees range from the MTL baseline's ten branches to one. It searches for the
# profile's epochs (the first a warm-up of uniform draws), then the most probable tree is
# trained from scratch for as many: twice the epochs of a Selective Sharing run. The SGD's
# learning rate of 0.02 is too slow for the branching logits: scaled by 5, they learn at
# 25 times it.
LTB = {"nodes": (1, 1, 1, 10, 10), "logit_scale": 5.0, "warmup": 1}
GROUPING = CRITERIA + ("learning_to_branch",)  # the methods whose runs end with groups
PAPER_ACCURACY = {("mnist", "similarity"): 0.990}
PAPER_GROUPS = [["2", "3", "5"], ["6", "8", "9"]]


@dataclasses.dataclass(frozen=True)
class Setting:
    data: str
    method: str

    @property
    def name(self):
        return f"{self.data} {self.method}"


def datasets(profile):
    """The data sets a profile trains on: its own list, or every one."""
    return PROFILES[profile].get("data") or tuple(DATASETS)


def settings(profile="full"):
    return [Setting(d, m) for d in datasets(profile) for m in METHODS]


def task_names(data):
    return [f"class_{c}" for c in range(10)] if data != "mnist" else [f"digit_{d}" for d in range(10)]


def load(data, train_size=None):
    """((x, labels) train, validation, test) with x float32 N x 28 x 28 x 1 in [0, 1]."""
    if data == "mnist":
        parts = [load_numpy("mnist", s) for s in ("train50k", "val10k", "test")]
    else:
        x, y = load_numpy(data, "train")
        parts = [(x[:50000], y[:50000]), (x[50000:], y[50000:]), load_numpy(data, "test")]
    if train_size:
        parts[0] = (parts[0][0][:train_size], parts[0][1][:train_size])
    return [((x / 255.0).astype("float32")[..., None], y.astype("int64")) for x, y in parts]


class ClassAccuracy(keras.callbacks.Callback):
    """Adds `val_class_accuracy` and `test_class_accuracy` to every epoch's logs: the
    class is the task with the highest score (one-vs-all) or the softmax's argmax."""

    def __init__(self, data, names):
        super().__init__()
        self.data, self.names, self.trainer = data, names, None

    def set_trainer(self, trainer):
        self.trainer = trainer

    def on_epoch_end(self, epoch, logs=None):
        for prefix, (x, y) in self.data.items():
            outputs = self.trainer.model.predict(x, batch_size=1000, verbose=0)
            if len(outputs) == 1:
                predicted = np.argmax(next(iter(outputs.values())), axis=1)
            else:
                predicted = predict_digits(outputs, self.names)
            logs[f"{prefix}_class_accuracy"] = float(np.mean(predicted == y))


def train_run(setting, run_seed, epochs, train_size, log=None, steps_per_epoch=None):
    """Trains one model of `setting`; returns the run's record."""
    (x, y), (xv, yv), (xt, yt) = load(setting.data, train_size)
    names = task_names(setting.data)
    keras.utils.set_random_seed(run_seed)
    if setting.method == "stl":
        model = zoo.build("selective_sharing_stl", tasks={"digit": 10})
        tasks, labels = None, {"digit": y}
    else:
        tasks = one_vs_all_tasks(names)
        labels = {n: (y == c).astype("int64") for c, n in enumerate(names)}
        if setting.method == "learning_to_branch":
            model = zoo.build("learning_to_branch", nodes=LTB["nodes"], logit_scale=LTB["logit_scale"],
                              seed=run_seed, **_branch_layers(tasks))
        else:
            model = zoo.build("selective_sharing", tasks=tasks)
    trainer = Trainer(model, tasks=tasks, seed=run_seed,
                      optimizer=keras.optimizers.SGD(LEARNING_RATE, momentum=MOMENTUM))
    callbacks = [ClassAccuracy({"val": (xv, yv), "test": (xt, yt)}, names)]
    sharing = None
    if setting.method in CRITERIA:
        sharing = SelectiveSharing(setting.method, seed=run_seed, verbose=False)
        callbacks.insert(0, sharing)
    if log:
        callbacks.append(epoch_log(log, epochs, 5, lambda logs: (
            f"val {logs['val_class_accuracy']:.4f}, test {logs['test_class_accuracy']:.4f}"
            + (f", {int(logs['branches'])} branches" if "branches" in logs else ""))))
    start = time.time()
    fit = {"epochs": epochs, "batch_size": BATCH_SIZE, "steps_per_epoch": steps_per_epoch, "verbose": 0}
    if setting.method == "learning_to_branch":
        return _branch_run(setting, run_seed, trainer, (x, labels), callbacks, start, fit)
    history = trainer.fit(x, labels, callbacks=callbacks, **fit).history
    seconds = time.time() - start
    val, test = np.asarray(history["val_class_accuracy"]), np.asarray(history["test_class_accuracy"])
    chosen = int(np.argmax(val))
    record = {
        "setting": setting.name, "run_seed": run_seed, "epochs": epochs, "seconds": round(seconds, 2),
        "params": int(trainer.model.count_params()),
        "test_accuracy": float(test[chosen]), "chosen_epoch": chosen + 1,
        "test_accuracy_last_epoch": float(test[-1]),
        "history": {k: [round(float(v), 5) for v in history[k]]
                    for k in ("loss", "val_class_accuracy", "test_class_accuracy", "branches", "params")
                    if k in history},
    }
    if setting.method != "stl":
        record["branches"] = len(groups_of(trainer.model))
        record["groups"] = groups_of(trainer.model)
    if sharing is not None:
        record["lock_epoch"] = sharing.lock_epoch
        record["regroupings"] = [{k: r[k] for k in ("epoch", "clusters", "groups", "params", "seconds")}
                                 for r in sharing.rows if r["changed"]]
        record["grouping_seconds"] = round(sum(r["seconds"]["decomposition"] + r["seconds"]["clustering"]
                                               + r["seconds"]["capture_read"] for r in sharing.rows), 3)
    return record


def _train(name, run, *, cells, seed, config, log):
    return train_run(cells[name], seed * 1000 + run, config["epochs"], config["train"], log,
                     steps_per_epoch=config["steps_per_epoch"])


def reproduce(profile, out, runs=None, seed=0, only=None, log=print, records=None):
    """Runs every setting, run by run across the settings (skipping runs already in `out`
    or `records`), then writes `results.json`, `report.md` and `groups.png` into `out`.
    Returns the results dict."""
    config, runs = check_profile(PROFILES, profile, runs)
    epochs = config["epochs"]
    shrunk = {k: (list(v) if isinstance(v, tuple) else v) for k in ("steps_per_epoch", "data")
              if (v := config.get(k)) is not None}
    workdir = Workdir(out, {"name": NAME, "profile": profile, "seed": seed, "epochs": epochs,
                            "train": config["train"], "batch_size": BATCH_SIZE,
                            "learning_rate": LEARNING_RATE, "momentum": MOMENTUM, **shrunk}, records)
    cells = {s.name: s for s in settings(profile)}
    check_only(only, list(cells))
    chosen = [n for n in cells if only is None or n in only]
    log(f"paper 002, profile {profile}: {len(chosen)} settings x {runs} runs x {epochs} epochs "
        f"into {workdir.out}")
    train = functools.partial(_train, cells=cells, seed=seed, config=config, log=log)
    found = run_settings(workdir, list(cells), runs, chosen, train, lambda r: (
        f"test {r['test_accuracy']:.4f} (epoch {r['chosen_epoch']}), {r['params']:,} parameters"), log,
        by_run=True)
    results = summarise(found, profile, runs, seed, config, workdir.wall_seconds)
    results["trained_on"] = workdir.trained_on
    write_json(workdir.out / "results.json", results)
    plot_groups(found, workdir.out / "groups.png", datasets(profile))
    report = render_report(results, found)
    atomic_write_bytes(workdir.out / "report.md", report.encode())
    log(report)
    return results


def _branch_layers(tasks):
    return dict(tasks=tasks, input_shape=(28, 28, 1), filters=(20, 40), kernel_size=5, padding="valid",
                batch_norm=True, units=(640, 100, 50))


def _branch_run(setting, run_seed, trainer, train, callbacks, start, fit):
    """Learning to Branch: the search on `trainer`, then its most probable tree trained
    from scratch by a trainer of the same optimizer, data and callbacks."""
    search = BranchSearch(warmup=LTB["warmup"], verbose=False)
    trainer.fit(*train, callbacks=[search, *callbacks], **fit)
    search_seconds = time.time() - start
    keras.utils.set_random_seed(run_seed)
    tasks = trainer.tasks
    model = zoo.build("learning_to_branch", tree=search.tree, **_branch_layers(tasks))
    kept = Trainer(model, tasks=tasks, seed=run_seed, optimizer=keras.optimizers.SGD(LEARNING_RATE, momentum=MOMENTUM))
    history = kept.fit(*train, callbacks=callbacks, **fit).history
    val, test = np.asarray(history["val_class_accuracy"]), np.asarray(history["test_class_accuracy"])
    chosen = int(np.argmax(val))
    groups = {}
    for task, path in search.tree.items():  # tasks on one last-layer node share their whole branch
        groups.setdefault(path[-1], []).append(task)
    return {
        "setting": setting.name, "run_seed": run_seed, "epochs": fit["epochs"], "seconds": round(time.time() - start, 2),
        "search_seconds": round(search_seconds, 2), "params": int(model.count_params()),
        "test_accuracy": float(test[chosen]), "chosen_epoch": chosen + 1,
        "test_accuracy_last_epoch": float(test[-1]), "branches": len(groups), "groups": list(groups.values()),
        "tree": {t: list(p) for t, p in search.tree.items()}, "tree_text": format_tree(search.tree),
        "history": {k: [round(float(v), 5) for v in history[k]] for k in ("loss", "val_class_accuracy",
                                                                          "test_class_accuracy")},
    }


RUN_FIELDS = ("run_seed", "test_accuracy", "chosen_epoch", "test_accuracy_last_epoch", "params",
              "branches", "groups", "lock_epoch", "seconds", "grouping_seconds", "search_seconds", "tree_text")


def run_seconds(found):
    """A run's training seconds, estimated as the mean of the finished runs of its method
    (on any data set), or of every finished run; None before any."""
    done = [r for rs in found.values() for r in rs]
    if not done:
        return None
    by_method = {}
    for r in done:
        by_method.setdefault(r["setting"].split(" ", 1)[1], []).append(r["seconds"])
    overall = float(np.mean([r["seconds"] for r in done]))
    return lambda name: float(np.mean(by_method.get(name.split(" ", 1)[1], [overall])))


def pair_counts(records):
    """{(class i, class j): the number of `records` (runs) that ended with i and j in one branch}."""
    counts = {}
    for r in records:
        for g in r.get("groups") or []:
            idx = sorted(int(t.rsplit("_", 1)[1]) for t in g)
            for a, i in enumerate(idx):
                for j in idx[a + 1:]:
                    counts[(i, j)] = counts.get((i, j), 0) + 1
    return counts


def summarise(found, profile, runs, seed, config, wall_seconds):
    rows = []
    for setting in settings(profile):
        done = found.get(setting.name, [])
        for metric in ("test_accuracy", "params", "lock_epoch", "branches"):
            values = [r[metric] for r in done if r.get(metric) is not None]
            mean, std = mean_std(values) if values else (None, None)
            paper = PAPER_ACCURACY.get((setting.data, setting.method)) if metric == "test_accuracy" else None
            rows.append({"setting": setting.name, "task": "class", "metric": metric, "ours": mean,
                         "ours_std": std, "runs": len(values), "paper": paper})
    overhead = [100 * r["grouping_seconds"] / r["seconds"] for rs in found.values() for r in rs
                if "grouping_seconds" in r]
    return {"paper": PAPER, "name": NAME, "profile": profile, "device": device(),
            "versions": versions(), "wall_seconds": round(wall_seconds, 1), "seed": seed,
            "epochs": config["epochs"], "train": config["train"] or 50000,
            "steps_per_epoch": config.get("steps_per_epoch"), "data": list(datasets(profile)),
            "runs_per_setting": runs,
            "status": status(run_order([s.name for s in settings(profile)], runs, by_run=True), found,
                             run_seconds(found)),
            "batch_size": BATCH_SIZE, "learning_rate": LEARNING_RATE, "momentum": MOMENTUM,
            "grouping_overhead_pct": round(float(np.mean(overhead)), 3) if overhead else None,
            "train_seconds": round(sum(r["seconds"] for rs in found.values() for r in rs), 1),
            "rows": rows,
            "runs": {name: [{k: r.get(k) for k in RUN_FIELDS} for r in rs] for name, rs in found.items()}}


def _cell(results, setting, metric):
    return next(r for r in results["rows"] if r["setting"] == setting.name and r["metric"] == metric)


def _fmt(row, digits=4, scale=1.0):
    if row["ours"] is None:
        return "-"
    if digits == 0:
        return f"{row['ours'] * scale:,.0f} +- {row['ours_std'] * scale:,.0f}"
    return f"{row['ours'] * scale:.{digits}f} +- {row['ours_std'] * scale:.{digits}f}"


def _named(groups, data):
    names = CLASS_NAMES[data]
    return [[names[int(t.rsplit("_", 1)[1])] for t in g] for g in groups]


def render_report(results, found):
    profile = results["profile"]
    lines = [
        "# Paper 002 reproduced: Selective Sharing (task branches merged while training)",
        "",
        status_line(results["status"]),
        "",
        "Data: MNIST is the paper's (real MNIST, `train50k` / `val10k` / `test`)." + (
            " Beyond the paper, the same protocol on Fashion-MNIST (real) and on letters A-J rendered "
            "from fonts as notMNIST was (not notMNIST itself); `paper` is null for those."
            if len(results["data"]) > 1 else ""),
        "",
        f"- Profile: **{profile}**. " + (
            "The paper's protocol: 30 epochs on all 50,000 training images." if profile == "full" else
            f"The paper's protocol on MNIST only, in shorter epochs: an epoch is {results['steps_per_epoch']} "
            f"batches ({results['steps_per_epoch'] * results['batch_size']:,} of the 50,000 training images; the "
            f"batches run on through the shuffled passes), {results['epochs']} of them "
            f"({results['epochs'] * results['steps_per_epoch'] * results['batch_size'] / 50000:.1f} passes) "
            "instead of 30 whole epochs; validation and test sets whole, evaluated every epoch. "
            "Grouping clusters once an epoch and locks by the paper's rule, so it decides within about the "
            "first half of the run and the merged branches train on for the second, as in the full profile "
            "(locks at epochs 3 to 14 of 30). Shrinking the epochs' number instead (6 epochs of 10,000 "
            "images) left merges up to the last epoch and merged heads no time to recover." if
            results.get("steps_per_epoch") else
            f"The paper's protocol shrunk: {results['train']:,} training images instead of 50,000 and "
            f"{results['epochs']} epochs instead of 30 (validation and test sets whole)."),
        f"- SGD, learning rate {results['learning_rate']}, momentum {results['momentum']}, batch "
        f"{results['batch_size']}; test accuracy of the epoch with the best validation accuracy; the "
        "class is the task with the highest score.",
        "- Selective Sharing: gradients of each task's branch point (640 x 100 kernel) summed over "
        "each epoch, tensor-train cores (tensorly, rank 5, 10x8x8x10x10), HDBSCAN (`hdbscan`, "
        "min_cluster_size 2, min_samples 1), merge keeping the branch with the lowest loss, lock after 3 "
        "epochs without change or when every task is grouped (`training/selective_sharing.py` "
        "documents each criterion's rule).",
        f"- Runs: {results['runs_per_setting']} per setting (seeds {results['seed']} * 1000 + i, the same "
        "in every setting).",
        f"- Machine: {machine_line(results)}. Versions: " + ", ".join(
            f"{k} {v}" for k, v in results["versions"].items()) + ".",
        f"- Wall time: {format_seconds(results['wall_seconds'])} over all sittings "
        f"({format_seconds(results['train_seconds'])} of it training). Grouping (reading the "
        f"captured sums, decomposition, clustering) took "
        + (f"{results['grouping_overhead_pct']:.2f}% of the Selective Sharing runs' training time."
           if results["grouping_overhead_pct"] is not None else "no time yet."),
        "",
    ]
    missing = [s.name for s in settings(profile) if len(found.get(s.name, [])) < results["runs_per_setting"]]
    if missing:
        lines += [f"**Partial: settings with missing runs: {', '.join(missing)}.**", ""]
    for data, title in ((d, DATASETS[d]) for d in results["data"]):
        lines += [f"## {title}: test accuracy, parameters, lock epoch, branches (mean +- std)", "",
                  "| method | test accuracy (ours) | paper | difference | # params | lock epoch | # branches |",
                  "|---|---|---|---|---|---|---|"]
        for method in METHODS:
            s = Setting(data, method)
            acc = _cell(results, s, "test_accuracy")
            paper = acc["paper"]
            diff = "-" if paper is None or acc["ours"] is None else f"{acc['ours'] - paper:+.4f}"
            label = {"stl": "STL baseline", "mtl": "MTL baseline", "learning_to_branch":
                     "Learning to Branch (search, then its tree retrained)"}.get(method, f"Selective Sharing - {method}")
            lines.append(f"| {label} | {_fmt(acc)} | {'-' if paper is None else f'{paper:.3f}'} | {diff} | "
                         f"{_fmt(_cell(results, s, 'params'), 0)} | {_fmt(_cell(results, s, 'lock_epoch'), 1)} | "
                         f"{_fmt(_cell(results, s, 'branches'), 1)} |")
        lines += ["", "Groups formed (tasks sharing a branch at the end, per run):", ""]
        for method in GROUPING:
            runs = found.get(Setting(data, method).name, [])
            for i, r in enumerate(runs):
                shared = [g for g in _named(r["groups"], data) if len(g) > 1]
                when = (f"search {r['search_seconds']:.0f} s of {r['seconds']:.0f} s" if "search_seconds" in r
                        else f"lock epoch {r['lock_epoch']}; {r['seconds']:.0f} s")
                lines.append(f"- {method}, run {i + 1}: " + (", ".join(
                    "{" + ", ".join(g) + "}" for g in shared) or "none") + f" ({when}; "
                    f"test {r['test_accuracy']:.4f} at epoch {r['chosen_epoch']}, chosen on validation, "
                    f"{r['test_accuracy_last_epoch']:.4f} at the last)")
        if data == "mnist":
            lines.append("- paper (similarity): {2, 3, 5}, {6, 8, 9}")
        lines.append("")
    lines += ["## Which groups form, how often", "",
              "![The share of runs in which two classes ended in one branch](groups.png)", "",
              "Pairs of classes in one branch at the end of every run (the figure has each pair's share):", ""]
    for data in results["data"]:
        names = CLASS_NAMES[data]
        for method in GROUPING:
            runs = found.get(Setting(data, method).name, [])
            always = sorted(pair for pair, n in pair_counts(runs).items() if n == len(runs))
            if runs:
                shown = ", ".join(f"{{{names[i]}, {names[j]}}}" for i, j in always[:10])
                lines.append(f"- {DATASETS[data].split(' (')[0]}, {method} ({len(runs)} runs): " + (
                    (shown + (f" and {len(always) - 10} more" if len(always) > 10 else "")) or "none"))
    lines.append("")
    return "\n".join(lines) + "\n"


def plot_groups(found, path, datasets=tuple(DATASETS)):
    """For each data set and criterion, how often two classes ended in one branch (over
    runs), as a 10 x 10 matrix; the paper's MNIST groups beside them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = len(GROUPING) + 1
    fig, axes = plt.subplots(len(datasets), columns, figsize=(3.2 * columns, 3.2 * len(datasets)), squeeze=False)
    for row, data in enumerate(datasets):
        names = CLASS_NAMES[data]
        panels = [(c, found.get(Setting(data, c).name, [])) for c in GROUPING]
        if data == "mnist":
            panels.append(("paper (similarity)", [{"groups": [[f"digit_{d}" for d in g] for g in PAPER_GROUPS]}]))
        for column in range(columns):
            ax = axes[row, column]
            if column >= len(panels):
                ax.axis("off")
                continue
            title, runs = panels[column]
            together = np.eye(10) * bool(runs)
            for (i, j), n in pair_counts(runs).items():
                together[i, j] = together[j, i] = n / len(runs)
            ax.imshow(together, vmin=0, vmax=1, cmap="Blues")
            ax.set_xticks(range(10), names, rotation=90, fontsize=7)
            ax.set_yticks(range(10), names, fontsize=7)
            ax.set_title(f"{DATASETS[data].split(' (')[0]}: {title}\n({len(runs)} runs)", fontsize=9)
    fig.suptitle("Share of runs in which two classes ended in one branch")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return path
