"""Paper 003's Table 1: 3 pipe architectures x weight sharing x auxiliary loss, 10 runs.

Protocol, the paper's as its authors ran it (their code, `qbouvet/DeepLearning-
WeightSharing-AuxLoss`: `architectures.py`, `training_framework.py`,
`summary_table_gen.ipynb`): each run draws fresh pairs from MNIST as EE-559's
`generate_pair_sets` does (1000 training pairs from MNIST's training images, 1000 test
pairs from its test images) and fresh weights (PyTorch's initialisation); the pipes read
the raw 0..255 pooled pixels; Adam, learning rate 1e-3, batch 100, 50 epochs, the
batches in the training set's order every epoch (no shuffling); the test accuracy is
recorded before each epoch's training (the first record is the untrained net, the last
the net after 49 epochs). The table's mean +- std is taken at the single epoch where the
mean over the 10 runs' test curves peaks.

Ours in addition, as labelled extra tables: each run's own best epoch (what this
reproduction reported before the authors' code was read), and the epoch chosen on 1000
validation pairs drawn from MNIST training images the run's training pairs do not use
(the honest selection). Run i uses the same draws and initial seed in every setting, so
settings are compared on paired data.
"""

import dataclasses
import time

import keras
import numpy as np

import zoo
from mtl_tf.data import load_numpy
from mtl_tf.data.helpers import make_pairs
from mtl_tf.data.paths import atomic_path, atomic_write_bytes
from training.callbacks import Evaluate
from training.reproduce.common import (
    Workdir, check_only, check_profile, device, epoch_log, format_seconds, machine_line, mean_std,
    versions, write_json,
)
from training.trainer import Trainer
from zoo.siamese import aux_weighting

PAPER = "003_f22ced5441240016.txt"
NAME = "siamese"
PROFILES = {
    "full": {"runs": 10, "epochs": 50},
    "quick": {"runs": 3, "epochs": 25},
}
PAIRS = 1000
BATCH_SIZE = 100
LEARNING_RATE = 1e-3
ADAM_EPSILON = 1e-8  # PyTorch's default (the authors'); Keras's is 1e-7
PIPES = {"shallow": "Shallow FC", "deep": "Deep FC", "conv": "ConvNet"}
COMBOS = ("none", "ws", "al", "ws+al")
COMBO_HEADERS = ("WS: no, AL: no", "WS: yes, AL: no", "WS: no, AL: yes", "WS: yes, AL: yes")
LEARNED = ("uncertainty", "gradnorm")
# Table 1 of the paper: mean test accuracy (best epoch) +- std over 10 runs.
PAPER_TABLE = {
    "shallow": ((0.8205, 0.0149), (0.8259, 0.0122), (0.8312, 0.0055), (0.8386, 0.0182)),
    "deep": ((0.8118, 0.0169), (0.8433, 0.0132), (0.8879, 0.0122), (0.8999, 0.0124)),
    "conv": ((0.8506, 0.0115), (0.8630, 0.0132), (0.9026, 0.0137), (0.9031, 0.0167)),
}
INPUTS = "raw 0..255 pixels"
HEADLINE = "test_accuracy_mean_curve"
SHUFFLE = False
HISTORY_KEYS = ("compare_loss", "compare_accuracy", "val_compare_accuracy",
                "test_compare_loss", "test_compare_accuracy", "test_digit_a_accuracy",
                "test_digit_b_accuracy", "weight_compare", "weight_digit_a", "weight_digit_b")


@dataclasses.dataclass(frozen=True)
class Setting:
    pipe: str
    combo: str
    weighting: str = None  # None: the paper's fixed weighted average

    @property
    def weight_sharing(self):
        return self.combo in ("ws", "ws+al")

    @property
    def aux(self):
        return self.combo in ("al", "ws+al")

    @property
    def name(self):
        pipe = {"shallow": "shallow fc", "deep": "deep fc", "conv": "convnet"}[self.pipe]
        return " ".join(p for p in (pipe, self.combo, self.weighting) if p)


def settings():
    """The paper's 12 settings, then ours: WS+AL with learned loss weighting."""
    paper = [Setting(p, c) for p in PIPES for c in COMBOS]
    return paper + [Setting(p, "ws+al", w) for p in PIPES for w in LEARNED]


def draw_pairs(run_seed, n=PAIRS):
    """One run's fresh pairs: train and validation from disjoint MNIST training images,
    test from MNIST's test images. Returns three `(pairs, labels)`."""
    images, labels = load_numpy("mnist", "train")
    order = np.random.default_rng(run_seed).permutation(len(images))
    train, val = order[: 2 * n], order[2 * n: 4 * n]
    test_images, test_labels = load_numpy("mnist", "test")
    return (make_pairs(images[train], labels[train], n, seed=run_seed),
            make_pairs(images[val], labels[val], n, seed=run_seed + 1),
            make_pairs(test_images, test_labels, n, seed=run_seed))


def train_run(setting, run_seed, epochs, log=None):
    """Trains one model of `setting` on one fresh draw; returns the run's record."""
    (x, y), validation, test = draw_pairs(run_seed)
    keras.utils.set_random_seed(run_seed)
    model = zoo.build("siamese", pipe=setting.pipe, weight_sharing=setting.weight_sharing, rescale=1.0)
    weighting = setting.weighting or aux_weighting(0.5 if setting.aux else 0.0)
    trainer = Trainer(model, weighting=weighting, seed=run_seed, shuffle=SHUFFLE,
                      optimizer=keras.optimizers.Adam(LEARNING_RATE, epsilon=ADAM_EPSILON))
    untrained = trainer.evaluate(test, batch_size=1000)["compare_accuracy"]
    callbacks = [Evaluate(test, prefix="test_")]
    if log:
        callbacks.append(epoch_log(log, epochs, 10, lambda logs: (
            f"train {logs['compare_accuracy']:.3f}, val {logs['val_compare_accuracy']:.3f}, "
            f"test {logs['test_compare_accuracy']:.3f}")))
    start = time.time()
    history = trainer.fit(x, y, epochs=epochs, batch_size=BATCH_SIZE, validation_data=validation,
                          callbacks=callbacks, verbose=0).history
    seconds = time.time() - start
    val, test_acc = np.asarray(history["val_compare_accuracy"]), np.asarray(history["test_compare_accuracy"])
    chosen, best = int(np.argmax(val)), int(np.argmax(test_acc))  # the first of ties
    # The authors' curve: recorded before each epoch's training, from the untrained net.
    authors_curve = [untrained, *test_acc[:-1].tolist()]
    digits = (np.asarray(history["test_digit_a_accuracy"]) + np.asarray(history["test_digit_b_accuracy"])) / 2
    return {
        "setting": setting.name, "run_seed": run_seed, "epochs": epochs, "seconds": round(seconds, 2),
        "params": int(model.count_params()),
        "test_accuracy": float(test_acc[chosen]), "chosen_epoch": chosen + 1,
        "test_accuracy_best_epoch": float(test_acc[best]), "best_epoch": best + 1,
        "test_accuracy_last_epoch": float(test_acc[-1]),
        "digit_test_accuracy": float(digits[chosen]),
        "test_curve_authors": [round(float(v), 5) for v in authors_curve],
        "history": {k: [round(float(v), 5) for v in history[k]] for k in HISTORY_KEYS if k in history},
    }


def reproduce(profile, out, runs=None, seed=0, only=None, log=print, records=None):
    """Runs every setting (skipping runs already in `out` or `records`), then writes
    `results.json`, `report.md` and `histories.png` into `out`. Returns the results dict.

    `only`: setting names (see `settings()`) to run now; the report then lists the
    others as missing, and a later call fills them in. `records`: a folder of committed
    run records (see `common.Workdir`)."""
    config, runs = check_profile(PROFILES, profile, runs)
    epochs = config["epochs"]
    workdir = Workdir(out, {"name": NAME, "profile": profile, "seed": seed, "epochs": epochs,
                            "batch_size": BATCH_SIZE, "learning_rate": LEARNING_RATE,
                            "inputs": INPUTS, "shuffle": SHUFFLE, "layers": "authors",
                            "adam_epsilon": ADAM_EPSILON}, records)
    check_only(only, [s.name for s in settings()])
    chosen = [s for s in settings() if only is None or s.name in only]
    log(f"paper 003, profile {profile}: {len(chosen)} settings x {runs} runs x {epochs} "
        f"epochs into {workdir.out}")
    # Every setting's finished runs are reported; only the chosen ones are trained now.
    records = {}
    for setting in settings():
        records[setting.name] = []
        for run in range(runs):
            record = workdir.finished(setting.name, run)
            if record is None and setting in chosen:
                log(f"[{chosen.index(setting) + 1}/{len(chosen)}] {setting.name}, run {run + 1}/{runs}")
                record = train_run(setting, seed * 1000 + run, epochs, log)
                workdir.save_run(setting.name, run, record)
                log(f"    best test {record['test_accuracy_best_epoch']:.4f}, chosen on "
                    f"validation {record['test_accuracy']:.4f} ({record['seconds']:.0f} s)")
            if record is not None:
                records[setting.name].append(record)
    workdir.close()
    results = summarise(records, profile, runs, seed, epochs, workdir.wall_seconds)
    results["trained_on"] = workdir.trained_on
    write_json(workdir.out / "results.json", results)
    plot_histories(records, workdir.out / "histories.png")
    report = render_report(results, records)
    atomic_write_bytes(workdir.out / "report.md", report.encode())
    log(report)
    return results


def mean_curve_selection(curves):
    """The authors' table value (`summary_table_gen.ipynb`): the epoch where the mean of
    the runs' test-accuracy curves peaks (the first of ties), and the mean and sample std
    (ddof 1, as pandas) of the runs at that epoch. Returns (epoch index, mean, std)."""
    curves = np.asarray(curves, np.float64)
    epoch = int(np.argmax(curves.mean(axis=0)))
    return (epoch, *mean_std(curves[:, epoch]))


def summarise(records, profile, runs, seed, epochs, wall_seconds):
    rows = []
    for setting in settings():
        done = records.get(setting.name, [])
        paper = _paper(setting)[0] if setting.weighting is None else None
        if done:
            epoch, mean, std = mean_curve_selection([r["test_curve_authors"] for r in done])
        else:
            epoch, mean, std = None, None, None
        rows.append({"setting": setting.name, "task": "compare", "metric": "test_accuracy_mean_curve",
                     "ours": mean, "ours_std": std, "runs": len(done), "paper": paper,
                     "epoch": None if epoch is None else epoch})
        for metric in ("test_accuracy_best_epoch", "test_accuracy", "digit_test_accuracy"):
            mean, std = mean_std([r[metric] for r in done]) if done else (None, None)
            rows.append({"setting": setting.name, "task": "digit" if metric.startswith("digit") else "compare",
                         "metric": metric, "ours": mean, "ours_std": std, "runs": len(done),
                         "paper": None})
    return {"paper": PAPER, "name": NAME, "profile": profile, "device": device(),
            "versions": versions(), "wall_seconds": round(wall_seconds, 1), "seed": seed,
            "epochs": epochs, "runs_per_setting": runs, "batch_size": BATCH_SIZE,
            "learning_rate": LEARNING_RATE, "inputs": INPUTS, "shuffle": SHUFFLE, "train_seconds": round(sum(
                r["seconds"] for rs in records.values() for r in rs), 1), "rows": rows}


def _cell(results, setting, metric):
    for row in results["rows"]:
        if row["setting"] == setting.name and row["metric"] == metric:
            return row
    raise KeyError(setting.name)


def render_report(results, records):
    profile = results["profile"]
    paper_rows = [Setting(p, c) for p in PIPES for c in COMBOS]
    lines = [
        "# Paper 003 reproduced: Siamese pipes, weight sharing (WS) and auxiliary loss (AL)",
        "",
        "Data: the paper's kind, rebuilt: pairs of 14x14 MNIST digits made as EE-559's "
        "`generate_pair_sets` makes them (2x2 average pooling of real MNIST, target 1 when "
        "the first digit is <= the second), a fresh draw of 1000 training and 1000 test pairs "
        "per run. The digit images are real MNIST, so the paper's numbers are comparable.",
        "",
        f"- Profile: **{profile}**. " + (
            "The paper's protocol: 10 runs, 50 epochs." if profile == "full" else
            f"The paper's protocol shrunk: {results['runs_per_setting']} run(s) instead of 10 and "
            f"{results['epochs']} epochs instead of 50 (everything else as in full)."),
        "- As the authors ran it (their code, `qbouvet/DeepLearning-WeightSharing-AuxLoss`): their "
        "layers (`zoo/siamese.py`), PyTorch's default initialisation, Adam with learning rate "
        f"1e-3 and PyTorch's epsilon 1e-8, batch {results['batch_size']}; inputs: **{results['inputs']}** (never rescaled); "
        f"batches **{'shuffled' if results['shuffle'] else 'in the training set order, every epoch'}**; "
        "AL: loss (1 - w) L_compare + w (L_a + L_b) / 2, w = 0.5; the test accuracy recorded "
        "before each epoch's training (from the untrained net).",
        f"- Runs: {results['runs_per_setting']} per setting; run i draws its pairs and initial "
        f"weights with seed {results['seed']} * 1000 + i, the same in every setting (paired).",
        f"- Machine: {machine_line(results)}. Versions: " + ", ".join(
            f"{k} {v}" for k, v in results["versions"].items()) + ".",
        f"- Wall time: {format_seconds(results['wall_seconds'])} over all sittings "
        f"({format_seconds(results['train_seconds'])} of it training).",
        "",
    ]
    missing = [s.name for s in settings() if len(records.get(s.name, [])) < results["runs_per_setting"]]
    if missing:
        lines += [f"**Partial: settings with missing runs: {', '.join(missing)}.**", ""]

    lines += ["## Table 1: mean test accuracy +- std at the epoch where the mean curve peaks (the paper's selection)", "",
              "The authors' rule (`summary_table_gen.ipynb`): the mean over the runs of the test "
              "accuracy per epoch, its best epoch, and the runs' mean and std there. Ours beside "
              "theirs; the difference is ours minus the paper's, and in units of the paper's "
              "standard deviation.", ""]
    lines += _table(results, paper_rows, HEADLINE, with_paper=True)
    epochs = {s.pipe + " " + s.combo: _cell(results, s, HEADLINE)["epoch"] for s in paper_rows}
    lines += ["", "Epoch of the peak (0 = untrained): " + "; ".join(
        f"{PIPES[s.pipe]} {COMBO_HEADERS[COMBOS.index(s.combo)]}: {epochs[s.pipe + ' ' + s.combo]}"
        for s in paper_rows if epochs[s.pipe + " " + s.combo] is not None) + "."]
    measured = [s for s in paper_rows if _cell(results, s, HEADLINE)["ours"] is not None]
    outside = [s for s in measured if abs(_diff(results, s)) > _paper(s)[1]]
    so_far = " measured so far (of 12)" if len(measured) < 12 else ""
    lines += ["", f"{len(measured) - len(outside)} of {len(measured)} cells{so_far} lie within "
              f"one paper standard deviation of the paper's mean."]
    if outside:
        lines += ["Outside: " + "; ".join(
            f"{s.name} {_diff(results, s):+.4f} ({_diff(results, s) / _paper(s)[1]:+.1f} paper std)"
            for s in outside) + "."]
    lines += ["", "## The same runs, each run's own best test epoch", "",
              "What this reproduction reported before the authors' code was read: every run's "
              "best test accuracy, averaged. It is higher than the paper's rule.", ""]
    lines += _table(results, paper_rows, "test_accuracy_best_epoch", with_paper=False)
    lines += ["", "## The same runs, epoch chosen on validation pairs", "",
              "Honest selection: the epoch with the best accuracy on 1000 validation pairs "
              "(MNIST training images unused by the run's training pairs); its test accuracy.", ""]
    lines += _table(results, paper_rows, "test_accuracy", with_paper=False)
    lines += ["", "## Beyond the paper: WS + AL with learned loss weights", "",
              "The three tasks (compare, digit_a, digit_b) weighted by uncertainty weighting "
              "(Kendall et al. 2018) or GradNorm (Chen et al. 2018, on the gradients of every "
              "weight the tasks share) instead of the fixed 0.5 average.", "",
              "| pipe | weighting | the paper's rule | each run's best epoch | chosen on validation | digit accuracy (chosen epoch) |",
              "|---|---|---|---|---|---|"]
    for pipe, title in PIPES.items():
        for weighting in (None, *LEARNED):
            s = Setting(pipe, "ws+al", weighting)
            lines.append(f"| {title} | {weighting or 'fixed, w = 0.5 (paper)'} | "
                         f"{_fmt(_cell(results, s, HEADLINE))} | "
                         f"{_fmt(_cell(results, s, 'test_accuracy_best_epoch'))} | "
                         f"{_fmt(_cell(results, s, 'test_accuracy'))} | "
                         f"{_fmt(_cell(results, s, 'digit_test_accuracy'))} |")
    lines += ["", "## Auxiliary task: digit accuracy of the pipes (test, chosen epoch)", "",
              "Without AL the pipes' outputs are not trained to be digits (their accuracy is "
              "near chance); the paper notes the conv pipes exceed 90% with AL.", ""]
    lines += _table(results, paper_rows, "digit_test_accuracy", with_paper=False)
    lines += ["", "## Training histories", "",
              "![Mean over runs of the training loss and test accuracy of the comparison]"
              "(histories.png)", ""]
    return "\n".join(lines) + "\n"


def _paper(setting):
    """The paper's (mean, std) for one of its 12 settings."""
    return PAPER_TABLE[setting.pipe][COMBOS.index(setting.combo)]


def _diff(results, setting):
    return _cell(results, setting, HEADLINE)["ours"] - _paper(setting)[0]


def _fmt(row):
    if row["ours"] is None:
        return "missing"
    return f"{row['ours']:.4f} +- {row['ours_std']:.4f}"


def _table(results, paper_rows, metric, with_paper):
    lines = ["| | " + " | ".join(COMBO_HEADERS) + " |", "|---" * 5 + "|"]
    for pipe, title in PIPES.items():
        cells = [_cell(results, s, metric) for s in paper_rows if s.pipe == pipe]
        lines.append(f"| {title}{' (ours)' if with_paper else ''} | " + " | ".join(_fmt(c) for c in cells) + " |")
        if with_paper:
            paper = PAPER_TABLE[pipe]
            lines.append(f"| {title} (paper) | " + " | ".join(f"{m:.4f} +- {s:.4f}" for m, s in paper) + " |")
            diffs = []
            for cell, (m, s) in zip(cells, paper):
                diffs.append("missing" if cell["ours"] is None else
                             f"{cell['ours'] - m:+.4f} ({(cell['ours'] - m) / s:+.1f} std)")
            lines.append("| difference | " + " | ".join(diffs) + " |")
    return lines


def plot_histories(records, path):
    """Mean over runs of the comparison's training loss and test accuracy per epoch, one
    column per pipe, one line per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 7.5), sharex=True)
    for column, (pipe, title) in enumerate(PIPES.items()):
        for setting in settings():
            runs = records.get(setting.name)
            if setting.pipe != pipe or not runs:
                continue
            style = "--" if setting.weighting else "-"
            label = " ".join(p for p in (setting.combo, setting.weighting) if p)
            for row, key in enumerate(("compare_loss", "test_compare_accuracy")):
                curves = np.asarray([r["history"][key] for r in runs])
                epochs = np.arange(1, curves.shape[1] + 1)
                axes[row, column].plot(epochs, curves.mean(axis=0), style, label=label)
        axes[0, column].set_title(title)
        axes[0, column].set_ylabel("training loss (compare)")
        axes[1, column].set_ylabel("test accuracy (compare)")
        axes[1, column].set_xlabel("epoch")
        axes[1, column].set_ylim(0.7, 0.95)
        for ax in axes[:, column]:
            ax.grid(alpha=0.3)
        if axes[1, column].lines:
            axes[1, column].legend(fontsize=8, loc="lower right")
    fig.suptitle("Paper 003: Siamese pipes, mean over runs")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path
