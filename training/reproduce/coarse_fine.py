"""Paper 004 (coarse-to-fine concatenation nets): Table 2 and Figure 8 for the six
architectures, with the paper's fine x2 loss weighting and, beyond the paper, uncertainty
weighting.

Protocol (the report's section 2.3 and the author's `train.py`): pixels / 255; 80% of the
training set to train on and 20% held out (one seeded split, the same for every
architecture and run; the author's was unseeded), Table 2 read on the held-out part at the
last epoch; Adam 5e-4, batch 100, the fine loss weighted 2 and the coarse 1. On CIFAR-100,
augmentation as the author's `ImageDataGenerator`: rotations up to 60 degrees, shifts and
zoom of 0.3, reflected fill (its `shear_range=0.3` is in degrees, a shear too small to
matter, so it is left out). The author's code also stops early on the training loss
(patience 10); the report says 100 epochs, which every run here trains.

CIFAR-100 is not in any package registry, so where its files are absent the report uses
real hierarchies that are here: Fashion-MNIST (10 garments in 4 groups) and MNIST +
Fashion-MNIST + letters A-J rendered from fonts (30 classes; coarse: which data set),
without augmentation (centred grey images on black, where reflected fill and 60-degree
turns would make other classes). `paper` is null for those.
"""

import dataclasses
import json
import time

import keras
import numpy as np

import zoo
from mtl_tf.data import load_hierarchy
from mtl_tf.data.paths import atomic_path, atomic_write_bytes
from mtl_tf.tasks import Task
from training.reproduce.common import (
    Workdir, check_only, check_profile, device, epoch_log, format_seconds, machine_line, mean_std,
    read_history, run_settings, versions, write_json,
)
from training.trainer import Trainer
from zoo.coarse_fine import ARCHITECTURES, CONV_FILTERS, HEAD_UNITS

PAPER = "004_516867e70a4fed6c.txt"
NAME = "coarse_fine"
PROFILES = {
    # The paper's widths on CIFAR-100; on the 28 x 28 stand-ins, convolutions 1/4 and heads
    # 1/2 of them (at the paper's widths a stand-in run takes about a day on this CPU).
    "full": {"runs": 3, "epochs": 100, "train": None, "conv_filters": CONV_FILTERS, "head_units": HEAD_UNITS,
             "standin_conv_filters": ((16, 16, 16), (32, 32)), "standin_head_units": (512, 256, 128, 64),
             "batch_norm_momentum": 0.99},
    # Convolutions 1/8 and heads 1/4 of the paper's widths, 10,000 training images; batch
    # norms whose moving statistics follow within the run's 480 steps (Keras's 0.99 lags).
    "quick": {"runs": 3, "epochs": 6, "train": 10000, "conv_filters": ((8, 8, 8), (16, 16)),
              "head_units": (256, 128, 64, 32), "batch_norm_momentum": 0.9},
}
BATCH_SIZE = 100
LEARNING_RATE = 5e-4
FINE_WEIGHT = 2.0
HELD_OUT = 0.2
DATASETS = {"cifar100": "CIFAR-100", "fashion_mnist": "Fashion-MNIST (4 groups)",
            "pooled": "MNIST + Fashion-MNIST + letters (3 sets, 30 classes)"}
SHORT = {"cifar100": "CIFAR-100", "fashion_mnist": "Fashion-MNIST", "pooled": "M + F + letters"}
WEIGHTINGS = ("paper", "uncertainty")
TITLES = {"independent": "Independent", "shared": "Shared Convolutions", "reuse_coarse": "Reuse Coarse Labels",
          "reuse_fine": "Reuse Fine Labels", "shared_reuse_coarse": "Shared & Reuse Coarse",
          "shared_reuse_fine": "Shared & Reuse Fine"}
# Table 2: fine loss, coarse loss, fine accuracy, coarse accuracy (validation, epoch 100).
PAPER_TABLE = {
    "independent": (1.96, 1.15, 0.4886, 0.6416),
    "shared": (1.94, 1.16, 0.4909, 0.6420),
    "reuse_coarse": (1.83, 1.21, 0.5150, 0.6229),
    "reuse_fine": (1.95, 1.07, 0.4914, 0.6838),
    "shared_reuse_coarse": (1.86, 1.16, 0.5034, 0.6391),
    "shared_reuse_fine": (1.84, 1.06, 0.5091, 0.6711),
}
METRICS = ("fine_loss", "coarse_loss", "fine_accuracy", "coarse_accuracy")


@dataclasses.dataclass(frozen=True)
class Setting:
    data: str
    architecture: str
    weighting: str

    @property
    def name(self):
        return f"{self.data} {self.architecture} {self.weighting}"


def available(data):
    """Whether data set `data`'s files are here (CIFAR-100 may not be)."""
    if data != "cifar100":
        return True
    from mtl_tf.data.loaders import _find_cifar100

    try:
        _find_cifar100(None)
    except RuntimeError:
        return False
    return True


def settings():
    return [Setting(d, a, w) for d in DATASETS for w in WEIGHTINGS for a in ARCHITECTURES]


def load(data, train_size, seed):
    """(train, held-out, test, class counts): float32 images in [0, 1] and
    {"fine", "coarse"} labels; the held-out part is a seeded 20% of the (first
    `train_size` shuffled) training images."""
    images, labels, names = load_hierarchy(data, "train")
    order = np.random.default_rng(seed).permutation(len(images))[:train_size]
    cut = int(round(len(order) * (1 - HELD_OUT)))
    parts = []
    for idx in (order[:cut], order[cut:]):
        parts.append((images[idx].astype(np.float32) / 255.0, {t: v[idx] for t, v in labels.items()}))
    test_images, test_labels, _ = load_hierarchy(data, "test")
    parts.append((test_images.astype(np.float32) / 255.0, test_labels))
    return parts, {t: len(n) for t, n in names.items()}


def augmented(x, y, seed):
    """The author's augmentation of CIFAR-100 (see the module docstring) as a dataset of
    batches, reshuffled every epoch."""
    import tensorflow as tf

    augment = keras.Sequential([
        keras.layers.RandomRotation(60 / 360, fill_mode="reflect", seed=seed),
        keras.layers.RandomTranslation(0.3, 0.3, fill_mode="reflect", seed=seed + 1),
        keras.layers.RandomZoom((-0.3, 0.3), (-0.3, 0.3), fill_mode="reflect", seed=seed + 2)])
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed).batch(BATCH_SIZE)
    return dataset.map(lambda a, b: (augment(a, training=True), b)).prefetch(2)


def widths(profile, data):
    """(conv_filters, head_units) of `profile` for data set `data`."""
    limits = PROFILES[profile]
    if data != "cifar100" and "standin_conv_filters" in limits:
        return limits["standin_conv_filters"], limits["standin_head_units"]
    return limits["conv_filters"], limits["head_units"]


def train_run(setting, run, run_seed, profile, workdir, seed, log=None):
    """Trains one model of `setting` (resuming its per-epoch checkpoints); returns its record."""
    limits = PROFILES[profile]
    ((x, y), (xh, yh), (xt, yt)), classes = load(setting.data, limits["train"], seed)
    keras.utils.set_random_seed(run_seed)
    tasks = [Task("fine", classes["fine"]), Task("coarse", classes["coarse"])]
    conv_filters, head_units = widths(profile, setting.data)
    model = zoo.build(f"coarse_fine_{setting.architecture}", tasks=tasks, input_shape=x.shape[1:],
                      conv_filters=conv_filters, head_units=head_units,
                      batch_norm_momentum=limits["batch_norm_momentum"])
    weighting = ("uncertainty" if setting.weighting == "uncertainty"
                 else {"class_name": "fixed", "config": {"weights": [FINE_WEIGHT, 1.0]}})
    run_dir = workdir.out / "train" / f"{setting.name.replace(' ', '_')}-{run:02d}"
    trainer = Trainer(model, tasks=tasks, weighting=weighting, run_dir=run_dir, seed=run_seed,
                      optimizer=keras.optimizers.Adam(LEARNING_RATE))
    epochs = limits["epochs"]
    data = augmented(x, y, run_seed) if setting.data == "cifar100" else x
    callbacks = [keras.callbacks.LambdaCallback(on_epoch_end=lambda *_: workdir.touch())]
    if log:
        callbacks.append(epoch_log(log, epochs, 2, lambda logs: (
            f"held-out fine {logs['val_fine_accuracy']:.4f}, coarse {logs['val_coarse_accuracy']:.4f}")))
    start = time.time()
    trainer.fit(data, None if setting.data == "cifar100" else y, epochs=epochs, batch_size=BATCH_SIZE,
                validation_data=(xh, yh), callbacks=callbacks, verbose=0)
    seconds = time.time() - start
    history = _history(run_dir)
    test = trainer.evaluate((xt, yt), batch_size=1000)
    record = {"setting": setting.name, "run_seed": run_seed, "epochs": epochs, "seconds": round(seconds, 2),
              "params": int(model.count_params()), "train_images": len(x), "held_out_images": len(xh),
              "test_images": len(xt), "history": history}
    for metric in METRICS:
        record[f"held_out_{metric}"] = history[f"val_{metric}"][-1]
        record[f"test_{metric}"] = float(test[metric])
    return record


def _history(run_dir):
    history = read_history(run_dir / "history.csv")
    keys = ["loss"] + [f"{p}{m}" for p in ("", "val_") for m in METRICS]
    return {k: [None if v is None else round(v, 5) for v in history[k]] for k in keys if k in history}


def reproduce(profile, out, runs=None, seed=0, only=None, log=print, records=None):
    """Runs every setting whose data is here (skipping runs already in `out` or
    `records`), then writes `results.json`, `report.md` and `curves.png` into `out`."""
    limits, runs = check_profile(PROFILES, profile, runs)
    check_only(only, [s.name for s in settings()])
    # The protocol as JSON reads it back (lists, not tuples): every limit but the run count.
    protocol = json.loads(json.dumps({k: v for k, v in limits.items() if k != "runs"}))
    workdir = Workdir(out, {"name": NAME, "profile": profile, "seed": seed, "batch_size": BATCH_SIZE,
                            "learning_rate": LEARNING_RATE, **protocol}, records)
    present = [d for d in DATASETS if available(d)]
    chosen = [s for s in settings() if s.data in present and (only is None or s.name in only)]
    log(f"paper 004, profile {profile}: {len(chosen)} settings x {runs} runs x {limits['epochs']} epochs "
        f"into {workdir.out} (data: {', '.join(DATASETS[d] for d in present)})")
    by_name = {s.name: s for s in settings()}
    found = run_settings(
        workdir, list(by_name), runs, [s.name for s in chosen],
        lambda name, run: train_run(by_name[name], run, seed * 1000 + run, profile, workdir, seed, log),
        lambda r: f"held-out fine {r['held_out_fine_accuracy']:.4f}, coarse {r['held_out_coarse_accuracy']:.4f}", log)
    results = summarise(found, profile, runs, seed, present, workdir.wall_seconds)
    results["trained_on"] = workdir.trained_on
    write_json(workdir.out / "results.json", results)
    plot_curves(found, workdir.out / "curves.png")
    report = render_report(results)
    atomic_write_bytes(workdir.out / "report.md", report.encode())
    log(report)
    return results


def summarise(found, profile, runs, seed, present, wall_seconds):
    rows = []
    for setting in settings():
        done = found.get(setting.name, [])
        for part in ("held_out", "test"):
            for i, metric in enumerate(METRICS):
                values = [r[f"{part}_{metric}"] for r in done]
                mean, std = mean_std(values) if values else (None, None)
                paper = (PAPER_TABLE[setting.architecture][i] if part == "held_out" and setting.data == "cifar100"
                         and setting.weighting == "paper" else None)
                rows.append({"setting": setting.name, "task": metric.split("_")[0], "metric": f"{part}_{metric}",
                             "ours": mean, "ours_std": std, "runs": len(values), "paper": paper})
        params = [r["params"] for r in done]
        rows.append({"setting": setting.name, "task": None, "metric": "params",
                     "ours": float(params[0]) if params else None, "ours_std": 0.0 if params else None,
                     "runs": len(params), "paper": None})
    limits = PROFILES[profile]
    return {"paper": PAPER, "name": NAME, "profile": profile, "device": device(), "versions": versions(),
            "wall_seconds": round(wall_seconds, 1), "seed": seed, "runs_per_setting": runs,
            "epochs": limits["epochs"], "train": limits["train"], "batch_size": BATCH_SIZE,
            "learning_rate": LEARNING_RATE, "fine_weight": FINE_WEIGHT,
            "conv_filters": [list(g) for g in limits["conv_filters"]], "head_units": list(limits["head_units"]),
            "batch_norm_momentum": limits["batch_norm_momentum"],
            "data": present, "paper_widths_params": paper_widths_params(),
            "train_seconds": round(sum(r["seconds"] for rs in found.values() for r in rs), 1),
            "images_per_second": _speed(found),
            "orderings": orderings(rows, present), "rows": rows}


def _speed(found):
    """Training images per second over all runs (held-out evaluation included)."""
    runs = [r for rs in found.values() for r in rs]
    seconds = sum(r["seconds"] for r in runs)
    return round(sum(r["train_images"] * r["epochs"] for r in runs) / seconds, 1) if seconds else None


def paper_widths_params():
    """Each architecture's parameter count at the paper's widths on CIFAR-100's shape."""
    counts = {a: zoo.build(f"coarse_fine_{a}").count_params() for a in ARCHITECTURES}
    keras.backend.clear_session()
    return counts


def _cell(rows, setting, metric):
    return next(r for r in rows if r["setting"] == setting and r["metric"] == metric)


def orderings(rows, present):
    """The paper's three orderings, checked per data set on the held-out accuracies (paper
    weighting). "holds" when the means are ordered as the paper's; "beyond one std" when,
    besides, the gap exceeds the larger of the two standard deviations compared."""
    checks = []
    claims = [("reuse coarse is best on fine", "fine_accuracy", "reuse_coarse", "best"),
              ("reuse fine is best on coarse", "coarse_accuracy", "reuse_fine", "best"),
              ("reuse coarse hurts coarse (below independent)", "coarse_accuracy", "reuse_coarse", "below")]
    for data in present:
        for claim, metric, who, kind in claims:
            cells = {a: _cell(rows, f"{data} {a} paper", f"held_out_{metric}") for a in ARCHITECTURES}
            if any(c["ours"] is None for c in cells.values()):
                continue
            mine = cells[who]
            if kind == "best":
                rival = max((a for a in ARCHITECTURES if a != who), key=lambda a: cells[a]["ours"])
                gap = mine["ours"] - cells[rival]["ours"]
            else:
                rival = "independent"
                gap = cells[rival]["ours"] - mine["ours"]
            spread = max(mine["ours_std"], cells[rival]["ours_std"])
            checks.append({"data": data, "claim": claim, "against": rival, "gap": gap, "holds": gap > 0,
                           "beyond_one_std": gap > spread, "std": spread})
    return checks


def render_report(results):
    def pct(v):
        return "-" if v is None else f"{100 * v:.2f}%"

    def num(v):
        return "-" if v is None else f"{v:.2f}"

    rows = results["rows"]
    present = results["data"]
    lines = [
        "# Paper 004 reproduced: coarse-to-fine concatenation nets",
        "",
        "Data: " + ("CIFAR-100 (the paper's)." if "cifar100" in present else
                    "CIFAR-100's files are not on this machine (no package registry carries them), so "
                    "these tables use real hierarchies that are: Fashion-MNIST (10 garments in 4 groups: "
                    "upper body, lower or whole body, footwear, bag) and MNIST + Fashion-MNIST + letters A-J "
                    "rendered from fonts (30 classes; coarse: which data set). `paper` is null for them, and "
                    "the paper's CIFAR-100 numbers are shown beside them for the orderings only."),
        "",
        f"- Profile: **{results['profile']}**. " + (
            "The paper's protocol: 100 epochs, the whole training set (80% trained on, 20% held out); the "
            "paper's widths on CIFAR-100, and on the 28 x 28 stand-ins convolutions of [[16, 16, 16], [32, 32]] "
            "(1/4) and heads of [512, 256, 128, 64] (1/2)." if results["profile"] == "full" else
            f"The paper's protocol shrunk: {results['train']:,} training images (80% trained on, 20% held "
            f"out), {results['epochs']} epochs instead of 100, convolutions of "
            f"{results['conv_filters']} instead of [[64, 64, 64], [128, 128]], heads of "
            f"{results['head_units']} instead of [1024, 512, 256, 128], and batch-norm momentum "
            f"{results['batch_norm_momentum']} instead of Keras's 0.99 (so the moving statistics the "
            "held-out metrics use follow the net within the short run)."),
        f"- Adam {results['learning_rate']}, batch {results['batch_size']}, fine loss weighted "
        f"{results['fine_weight']:g} and coarse 1 (`paper` rows) or uncertainty weighting (beyond the paper); "
        "held-out metrics at the last epoch (as the paper's Table 2), the test split as well (labelled).",
        f"- Runs: {results['runs_per_setting']} per setting (seeds {results['seed']} * 1000 + i, the same in "
        "every setting); mean +- std.",
        f"- Machine: {machine_line(results)}. Versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()) + ".",
        f"- Wall time: {format_seconds(results['wall_seconds'])} over all sittings "
        f"({format_seconds(results['train_seconds'])} of it training"
        + (f", {results['images_per_second']:,.0f} training images/s with the held-out evaluation)."
           if results.get("images_per_second") else ")."),
        "",
        "Parameters at the paper's widths on CIFAR-100's 32 x 32 x 3 images (the paper says they are equal; "
        "the author's code gives them equal widths): " + ", ".join(
            f"{TITLES[a]} {n:,}" for a, n in results["paper_widths_params"].items()) + f"; spread "
        f"{100 * (max(results['paper_widths_params'].values()) / min(results['paper_widths_params'].values()) - 1):.2f}%.",
        "",
    ]
    for data in present:
        for weighting in WEIGHTINGS:
            label = "fine x2, coarse x1 (the paper's)" if weighting == "paper" else "uncertainty (beyond the paper)"
            lines += [f"## {DATASETS[data]}: Table 2, loss weighting {label}", "",
                      "| model | fine loss | coarse loss | fine accuracy | coarse accuracy | paper (CIFAR-100) | "
                      "test fine accuracy | test coarse accuracy | # params |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for a in ARCHITECTURES:
                name = f"{data} {a} {weighting}"
                cells = [_cell(rows, name, f"held_out_{m}") for m in METRICS]
                if not cells[0]["runs"]:
                    continue
                shown = [f"{num(c['ours'])} +- {num(c['ours_std'])}" if "loss" in c["metric"] else
                         f"{pct(c['ours'])} +- {100 * c['ours_std']:.2f}" for c in cells]
                paper = PAPER_TABLE[a]
                paper_text = (f"{paper[0]:.2f} / {paper[1]:.2f} / {100 * paper[2]:.2f}% / {100 * paper[3]:.2f}%"
                              if weighting == "paper" else "-")
                tests = [_cell(rows, name, f"test_{m}") for m in ("fine_accuracy", "coarse_accuracy")]
                params = _cell(rows, name, "params")["ours"]
                lines.append(f"| {TITLES[a]} | " + " | ".join(shown) + f" | {paper_text} | "
                             + " | ".join(f"{pct(t['ours'])} +- {100 * t['ours_std']:.2f}" for t in tests)
                             + f" | {int(params):,} |")
            lines.append("")
    if results["orderings"]:
        lines += ["## The paper's orderings (held-out accuracy, paper weighting)", "",
                  "| data | claim | against | gap | holds | beyond one std |", "|---|---|---|---|---|---|"]
        for c in results["orderings"]:
            lines.append(f"| {DATASETS[c['data']]} | {c['claim']} | {TITLES[c['against']]} | "
                         f"{100 * c['gap']:+.2f} points (std {100 * c['std']:.2f}) | "
                         f"{'yes' if c['holds'] else 'no'} | {'yes' if c['beyond_one_std'] else 'no'} |")
        lines.append("")
    lines += ["## Figure 8: held-out loss and accuracy of the six models (mean over runs)", "",
              "![Loss and accuracy curves](curves.png)", ""]
    return "\n".join(lines) + "\n"


def plot_curves(found, path):
    """Figure 8: per data set, held-out fine/coarse loss and accuracy per epoch, one line
    per architecture (paper weighting, mean over runs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datas = [d for d in DATASETS if any(found.get(Setting(d, a, "paper").name) for a in ARCHITECTURES)] or ["-"]
    fig, axes = plt.subplots(len(datas), 4, figsize=(16, 3.6 * len(datas)), squeeze=False)
    for row, data in enumerate(datas):
        for column, metric in enumerate(METRICS):
            ax = axes[row, column]
            for a in ARCHITECTURES:
                runs = found.get(Setting(data, a, "paper").name, [])
                curves = [r["history"][f"val_{metric}"] for r in runs]
                if curves:
                    length = min(len(c) for c in curves)
                    mean = np.mean([c[:length] for c in curves], axis=0)
                    ax.plot(np.arange(1, length + 1), mean, label=TITLES[a])
            ax.set_title(f"{SHORT.get(data, data)}: held-out {metric.replace('_', ' ')}", fontsize=10)
            ax.set_xlabel("epoch")
            if row == 0 and column == 0:
                ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return path
