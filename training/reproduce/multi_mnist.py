"""The leaderboard: every weighting strategy of the zoo on MultiMNIST, MultiFashion and
Multi-(Fashion+MNIST), beside Sener and Koltun's MultiMNIST table (NeurIPS 2018).

Protocol. The network is Sener and Koltun's MultiLeNet (`zoo.multi_lenet`; on the 36 x 36
Pareto MTL sets with Pareto MTL's 9 x 9 first kernel), trained with Adam at batch 256
(Sener and Koltun's batch; their code also offers Adam). Every method, the single-task
nets included, gets the same learning-rate search: run 0 at each rate of the profile's
grid, the rate chosen on the validation split, then the other runs at that rate; each
run's test accuracy is read at the epoch its validation accuracy (the mean of the two
tasks') was highest. Run i starts from seed `seed * 1000 + i` for every method, so the
methods are compared on the same initial weights and batch orders.

That honest baseline is what Kurin et al. (NeurIPS 2022) and Xin et al. (NeurIPS 2022)
asked for: a tuned equal weighting matches most methods. The report counts the methods
whose mean accuracy beats the tuned equal weighting's by more than one standard
deviation (the larger of the two methods' stds over the runs).

Gain over the single-task nets: LibMTL's delta_m (`LibMTL/utils.py`,
`count_improvement`), the mean over tasks of (acc - acc_stl) / acc_stl, here in percent
(LibMTL returns the fraction).

Sener and Koltun's figures are quoted by secondary sources; the paper's table was not
reachable here, so they are unverified. Their protocol differs from ours: 60,000 training
images and the test set as the only held-out set, 100 epochs.
"""

import functools
import time

import keras
import numpy as np

import zoo
from mtl_tf import weighting as weighting_lib
from mtl_tf.data import load_numpy
from mtl_tf.data.paths import atomic_write_bytes
from training.reproduce.common import (
    Workdir, check_only, check_profile, device, format_seconds, machine_line, mean_std,
    run_settings, versions, write_json,
)
from training.trainer import Trainer

PAPER = None  # Sener and Koltun's paper is not among ../shared/papers
NAME = "multi_mnist"
DATASETS = ("multi_mnist", "multi_fashion", "multi_fashion_mnist")
TITLES = {"multi_mnist": "MultiMNIST", "multi_fashion": "MultiFashion", "multi_fashion_mnist": "Multi-(Fashion+MNIST)"}
TASKS = {"left": 10, "right": 10}
BATCH_SIZE = 256
PROFILES = {
    # The quick profile searches the rate on MultiMNIST alone and trains every set at it.
    "quick": {"runs": 3, "epochs": 3, "train": 6_000, "val": 2_000, "learning_rates": (1e-3, 3e-3),
              "search_on": "multi_mnist"},
    "full": {"runs": 5, "epochs": 10, "train": 50_000, "val": 10_000, "learning_rates": (3e-4, 1e-3, 3e-3),
             "architectures": ("mmoe", "cgc", "ple", "dselect_k", "cross_stitch", "mtan")},
}
# The zoo's architectures at about MultiLeNet's widths (conv 10 and 20, dense 50), each
# trained with equal weighting; their convolutions are the builders' 3 x 3 ones.
ARCHITECTURES = {
    "mmoe": {"experts": 4, "expert_filters": (10, 20), "expert_units": (50,), "tower_units": (50,)},
    "cgc": {"shared_experts": 2, "task_experts": 1, "expert_filters": (10, 20), "expert_units": (50,),
            "tower_units": (50,)},
    "ple": {"levels": 2, "shared_experts": 2, "task_experts": 1, "expert_filters": (10, 20), "expert_units": (50,),
            "tower_units": (50,)},
    "dselect_k": {"experts": 4, "k": 2, "expert_filters": (10, 20), "expert_units": (50,), "tower_units": (50,)},
    "cross_stitch": {"filters": (10, 20), "units": (50,)},
    "mtan": {"filters": (10, 20), "units": (50,), "head_units": (50,)},
}
# Sener and Koltun's MultiMNIST table (left / right accuracy, %), as quoted by secondary
# sources; our names for their rows.
SENER = {"stl": (97.23, 95.90), "equal": (96.46, 94.99), "uncertainty": (96.47, 95.29),
         "gradnorm": (96.27, 94.84), "mgda": (97.26, 95.90)}
# Strategies that train exactly like another here, and why (the report lists every pair
# whose runs all end with the same accuracies, with the reason where it is one of these).
SAME = {
    ("pcgrad", "upgrad"): "for two tasks UPGrad's direction is PCGrad's up to a positive factor, which Adam ignores",
    ("fairgrad", "nash_mtl"): "Nash-MTL is FairGrad at alpha = 1, FairGrad's default (up to a factor)",
    ("dualproj", "equal"): "DualProj changes the summed gradient only when the two tasks' gradients conflict "
                           "at the representation",
    ("scale_invariant", "stch"): "STCH minimises the log-losses (SI) until its nadir point is fixed after "
                                 "epoch 4 of the run",
}
# Registered strategies left out, and why.
EXCLUDED = {
    "fixed": "needs the weights; equal is fixed at (1, 1)",
    "krum": "needs at least 3 tasks", "trimmed_mean": "needs at least 3 tasks",
    "stairs_t1": "paper 001's schedules weight a reconstruction against a supervised task by epoch",
    "lin": "paper 001's schedule", "lin_t1": "paper 001's schedule", "exp_sigma": "paper 001's schedule",
}


def methods(profile="quick"):
    """The single-task nets (`stl`), every registered strategy that applies on MultiLeNet,
    then the profile's architectures (with equal weighting)."""
    strategies = [s for s in weighting_lib.available() if s not in EXCLUDED]
    return (["stl", "equal"] + [s for s in strategies if s != "equal"]
            + list(PROFILES[profile].get("architectures", ())))


def setting_name(dataset, method, learning_rate):
    return f"{dataset} {method} lr={learning_rate:g}"


@functools.lru_cache(maxsize=3)
def _arrays(dataset, split, count=None):
    images, labels = load_numpy(dataset, split)
    count = count or len(images)
    return (images[:count, ..., None].astype(np.float32) / 255.0,
            {task: values[:count] for task, values in labels.items()})


def _model(dataset, tasks, architecture=None):
    shape = (28, 28, 1) if dataset == "multi_mnist" else (36, 36, 1)
    if architecture:
        return zoo.build(architecture, tasks=tasks, input_shape=shape, **ARCHITECTURES[architecture])
    return zoo.build("multi_lenet", tasks=tasks, input_shape=shape, kernels=(5, 5) if shape[0] == 28 else (9, 5))


def _fit(dataset, tasks, weighting, learning_rate, run_seed, config):
    """Trains one model on `tasks`; returns its validation accuracy per epoch, the test
    accuracies at the best validation epoch, that epoch, and the training epochs' seconds."""
    x, y = _arrays(dataset, "train", config["train"])
    val = _arrays(dataset, "val", config["val"])
    test = _arrays(dataset, "test")
    names = list(tasks)
    y, val = {t: y[t] for t in names}, (val[0], {t: val[1][t] for t in names})
    test = (test[0], {t: test[1][t] for t in names})
    keras.utils.set_random_seed(run_seed)
    architecture = weighting if weighting in ARCHITECTURES else None
    model = _model(dataset, tasks, architecture)
    trainer = Trainer(model, tasks=tasks, weighting="equal" if architecture else weighting, seed=run_seed,
                      optimizer=keras.optimizers.Adam(learning_rate))
    curve, seconds, best = [], [], (-1.0, None, None)
    for epoch in range(config["epochs"]):
        start = time.time()
        trainer.fit(x, y, epochs=1, batch_size=BATCH_SIZE, verbose=0)
        seconds.append(time.time() - start)
        score = float(np.mean([trainer.evaluate(val, 1000)[f"{t}_accuracy"] for t in names]))
        curve.append(round(score, 5))
        if score > best[0]:
            best = (score, epoch, model.get_weights())
    model.set_weights(best[2])
    results = trainer.evaluate(test, 1000)
    return curve, {t: float(results[f"{t}_accuracy"]) for t in names}, best[1], seconds, model.count_params()


def train_run(dataset, method, learning_rate, run, run_seed, config):
    start = time.time()
    if method == "stl":  # one net per task, each its own epoch
        curves, test, epochs, seconds, params = [], {}, {}, [], 0
        for task in TASKS:
            curve, acc, epoch, secs, count = _fit(dataset, {task: 10}, "equal", learning_rate, run_seed, config)
            params += count
            curves.append(curve)
            test.update(acc)
            epochs[task] = epoch
            seconds.append(secs)
        curve = [round(float(v), 5) for v in np.mean(curves, axis=0)]
        epoch_seconds = float(np.median(np.sum(seconds, axis=0)))
    else:
        curve, test, epoch, secs, params = _fit(dataset, TASKS, method, learning_rate, run_seed, config)
        epochs, epoch_seconds = {t: epoch for t in TASKS}, float(np.median(secs))
    return {"setting": setting_name(dataset, method, learning_rate), "dataset": dataset, "method": method,
            "learning_rate": learning_rate, "run": run, "run_seed": run_seed, "val_accuracy": curve,
            "best_epoch": epochs, "test_accuracy": test, "epoch_seconds": round(epoch_seconds, 3), "params": params,
            "seconds": round(time.time() - start, 2)}


def _val_score(record):
    return max(record["val_accuracy"])


def choose_rate(records):
    """The learning rate whose run 0 reached the highest validation accuracy (the smaller
    rate on a tie): `records` maps rate -> run 0's record."""
    return max(sorted(records), key=lambda rate: (_val_score(records[rate]), -rate))


def reproduce(profile, out, runs=None, seed=0, only=None, log=print, records=None, datasets=DATASETS,
              method_names=None):
    """Trains every (data set, method) cell not yet in `out` or `records`: the
    learning-rate search's runs 0, then the chosen rate's other runs; then writes
    `results.json`, `report.md` and `leaderboard.png` into `out`. `only` keeps the
    cells named `"<data set> <method>"`. Returns the results."""
    config, runs = check_profile(PROFILES, profile, runs)
    rates = config["learning_rates"]
    workdir = Workdir(out, {"name": NAME, "profile": profile, "seed": seed, "batch_size": BATCH_SIZE,
                            **{k: list(v) if isinstance(v, tuple) else v for k, v in config.items() if k != "runs"}},
                      records)
    names = method_names or methods(profile)
    cells = [f"{d} {m}" for d in datasets for m in names]
    check_only(only, cells)
    log(f"Leaderboard, profile {profile}: {len(datasets)} data sets x {len(names)} methods, learning rates "
        f"{', '.join(f'{r:g}' for r in rates)} (run 0), then {runs} runs at the chosen one; {config['epochs']} "
        f"epochs of {config['train']:,} images, into {workdir.out}")
    found, chosen_rates = {}, {}
    for index, cell in enumerate(cells):
        dataset, method = cell.split(" ")
        chosen = [] if only is not None and cell not in only else None
        search = config.get("search_on") or dataset
        settings = {rate: setting_name(dataset, method, rate) for rate in rates}
        train = lambda name, run: train_run(dataset, method, _rate_of(name), run, seed * 1000 + run, config)
        describe = lambda r: (f"val {_val_score(r):.4f}, test " + " / ".join(
            f"{r['test_accuracy'][t]:.4f}" for t in TASKS))
        log(f"({index + 1}/{len(cells)}) {TITLES[dataset]}, {method}")
        if search == dataset:
            first = run_settings(workdir, list(settings.values()), 1,
                                 list(settings.values()) if chosen is None else chosen, train, describe, log)
            if any(not first[name] for name in settings.values()):
                continue  # the search is not complete: no rate to choose yet
            rate = choose_rate({r: first[settings[r]][0] for r in rates})
        elif f"{search} {method}" in chosen_rates:
            rate = chosen_rates[f"{search} {method}"]
        else:
            continue  # the rate comes from a search not yet run
        chosen_rates[cell] = rate
        name = settings[rate]
        found[cell] = run_settings(workdir, [name], runs, [name] if chosen is None else chosen, train,
                                   describe, log)[name]
    results = summarise(found, chosen_rates, profile, config, runs, seed, workdir.wall_seconds, datasets, names)
    results["trained_on"] = workdir.trained_on
    write_json(workdir.out / "results.json", results)
    plot_leaderboard(results, workdir.out / "leaderboard.png")
    report = render_report(results)
    atomic_write_bytes(workdir.out / "report.md", report.encode())
    log(report)
    return results


def _rate_of(name):
    return float(name.rsplit("lr=", 1)[1])


def _mean_accuracy(record):
    return float(np.mean([record["test_accuracy"][t] for t in TASKS]))


def delta_m(accuracies, baseline):
    """LibMTL's delta_m in percent: the mean over tasks of (acc - acc_stl) / acc_stl."""
    return 100.0 * float(np.mean([(accuracies[t] - baseline[t]) / baseline[t] for t in TASKS]))


def summarise(found, chosen_rates, profile, config, runs, seed, wall_seconds, datasets=DATASETS, names=None):
    names = names or methods(profile)
    rows, board = [], []
    for dataset in datasets:
        cells = {}
        for method in names:
            done = found.get(f"{dataset} {method}", [])
            if not done:
                continue
            cell = {"dataset": dataset, "method": method, "runs": len(done),
                    "learning_rate": chosen_rates[f"{dataset} {method}"],
                    "epoch_seconds": float(np.median([r["epoch_seconds"] for r in done])),
                    "params": done[0].get("params")}
            for task in TASKS:
                cell[task], cell[f"{task}_std"] = mean_std([100 * r["test_accuracy"][task] for r in done])
            cell["mean"], cell["mean_std"] = mean_std([100 * _mean_accuracy(r) for r in done])
            cells[method] = cell
        stl, equal = cells.get("stl"), cells.get("equal")
        ranked = sorted(cells.values(), key=lambda c: -c["mean"])
        for rank, cell in enumerate(ranked, 1):
            cell["rank"] = rank
            cell["delta_m"] = delta_m(cell, stl) if stl else None
            cell["beats_equal"] = (None if equal is None or cell["method"] == "equal" else
                                   bool(cell["mean"] - equal["mean"] > max(cell["mean_std"], equal["mean_std"])))
            paper = SENER.get(cell["method"]) if dataset == "multi_mnist" else None
            for task, value in zip(TASKS, paper or (None, None)):
                rows.append({"setting": f"{dataset} {cell['method']}", "task": task, "metric": "test_accuracy",
                             "ours": cell[task] / 100, "ours_std": cell[f"{task}_std"] / 100, "runs": cell["runs"],
                             "paper": None if value is None else round(value / 100, 6)})
        board += ranked
    overall = {}
    for method in names:
        ranks = [c["rank"] for c in board if c["method"] == method]
        if len(ranks) == len(datasets):
            overall[method] = float(np.mean(ranks))
    expected = len(datasets) * len(names)
    runs_of = {cell: [tuple(sorted(r["test_accuracy"].items())) for r in rs] for cell, rs in found.items()}
    same = sorted({tuple(sorted((a.split(" ")[1], b.split(" ")[1]))) for a in runs_of for b in runs_of
                   if a < b and a.split(" ")[0] == b.split(" ")[0] and runs_of[a] == runs_of[b]})
    same = [{"methods": list(pair), "datasets": list(d for d in datasets if runs_of.get(f"{d} {pair[0]}") is not None
                                                       and runs_of.get(f"{d} {pair[0]}") == runs_of.get(f"{d} {pair[1]}")),
             "why": SAME.get(pair)} for pair in same]
    return {"paper": PAPER, "name": NAME, "profile": profile, "device": device(), "versions": versions(),
            "wall_seconds": round(wall_seconds, 1), "seed": seed, "runs_per_setting": runs,
            "batch_size": BATCH_SIZE, "protocol": {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()},
            "datasets": list(datasets), "methods": names, "excluded": EXCLUDED,
            "complete_cells": sum(c["runs"] >= runs for c in board), "cells": expected,
            "train_seconds": round(sum(r["seconds"] for rs in found.values() for r in rs), 1),
            "overall_rank": dict(sorted(overall.items(), key=lambda kv: kv[1])), "same_runs": same,
            "leaderboard": board, "rows": rows}


def _cell(results, dataset, method):
    return next((c for c in results["leaderboard"] if c["dataset"] == dataset and c["method"] == method), None)


def _pm(mean, std):
    return f"{mean:.2f} +- {std:.2f}"


def render_report(results):
    profile, protocol = results["profile"], results["protocol"]
    missing = results["cells"] - results["complete_cells"]
    lines = [
        "# Which method should I use? The leaderboard on MultiMNIST, MultiFashion and Multi-(Fashion+MNIST)", "",
        (f"**Complete: all {results['cells']} cells ({len(results['datasets'])} data sets x "
         f"{len(results['methods'])} methods).**" if not missing else
         f"**Partial: {results['complete_cells']} of {results['cells']} cells complete; {missing} still to run "
         f"(the same command resumes them).**"), "",
        f"- Profile: **{profile}**. " + (
            "The full protocol." if profile == "full" else
            f"Shrunk to run in about 30 minutes: {protocol['train']:,} training images and {protocol['epochs']} "
            "epochs, so the nets are under-trained and the ranking is a smoke test; the full profile is "
            "the leaderboard."),
        f"- Protocol: MultiLeNet (Sener and Koltun's network; on the 36 x 36 sets Pareto MTL's 9 x 9 first "
        f"kernel), Adam, batch {results['batch_size']}, {protocol['epochs']} epochs of the first "
        f"{protocol['train']:,} training images; validation on {protocol['val']:,} images, test on 10,000. Every "
        f"method gets the same learning-rate search: run 0 at {', '.join(f'{r:g}' for r in protocol['learning_rates'])}, "
        "the rate chosen on validation accuracy, then the other runs at that rate" + (
            f" (searched on {TITLES[protocol['search_on']]} alone; every set trains at its rate)"
            if protocol.get("search_on") else ", searched on each data set") +
        ". Test accuracy at each run's best validation epoch.",
        f"- Runs: {results['runs_per_setting']} per cell, run i from seed {results['seed']} * 1000 + i for every "
        "method (the same initial weights and batch orders).",
        f"- Machine: {machine_line(results)}. Versions: " + ", ".join(
            f"{k} {v}" for k, v in results["versions"].items()) + ".",
        f"- Wall time: {format_seconds(results['wall_seconds'])} over all sittings "
        f"({format_seconds(results['train_seconds'])} of it training).",
        "- Left out: " + "; ".join(f"`{k}` ({v})" for k, v in results["excluded"].items()) + ".",
        ("- Architectures (equal weighting, at about MultiLeNet's widths): " + ", ".join(
            f"`{a}`" for a in protocol["architectures"]) + ". Learning to Branch is not among them: its "
         "search and retraining phases are a protocol of their own (paper 002's reproduction runs it)."
         if protocol.get("architectures") else
         "- Architectures: in the full profile only (this one compares the strategies on MultiLeNet)."), "",
        "## Sener and Koltun's MultiMNIST table beside ours", "",
        "Their figures are quoted by secondary sources (the paper's table was not reachable here); their "
        "protocol trains on 60,000 images for 100 epochs and reads the test set as its only held-out set.", "",
        "| method | paper left | ours left | paper right | ours right |", "|---|---|---|---|---|"]
    for method, (left, right) in SENER.items():
        c = _cell(results, "multi_mnist", method)
        ours = (lambda t: "-" if c is None else _pm(c[t], c[f"{t}_std"]))
        lines.append(f"| {'single-task' if method == 'stl' else method} | {left:.2f} | {ours('left')} | "
                     f"{right:.2f} | {ours('right')} |")
    lines += ["", "## Overall rank (the mean of the data sets' ranks by mean accuracy)", ""]
    if results["overall_rank"]:
        lines += ["| # | method | mean rank | " + " | ".join(TITLES[d] + " mean acc" for d in results["datasets"])
                  + " | delta_m (%) per data set |", "|---" * (4 + len(results["datasets"])) + "|"]
        for place, (method, rank) in enumerate(results["overall_rank"].items(), 1):
            cells = [_cell(results, d, method) for d in results["datasets"]]
            accs = [_pm(c["mean"], c["mean_std"]) + (" **>**" if c["beats_equal"] else "") for c in cells]
            deltas = ", ".join("-" if c["delta_m"] is None else f"{c['delta_m']:+.2f}" for c in cells)
            lines.append(f"| {place} | {method} | {rank:.1f} | " + " | ".join(accs) + f" | {deltas} |")
        lines.append("")
    lines += ["**>**: beats the tuned equal weighting by more than one std (the larger of the two).", ""]
    if results.get("same_runs"):
        lines += ["Methods whose every run ended with the same test accuracies (on the data sets named):", ""]
        for pair in results["same_runs"]:
            lines.append(f"- {' and '.join(pair['methods'])} ({', '.join(TITLES[d] for d in pair['datasets'])}): "
                         + (pair["why"] + "." if pair["why"] else "no reason known to us."))
        lines.append("")
    lines += ["`pcd` serves a primary task (the first, `left`) and lets the other fall; `stl` trains one "
              "net per task, twice the parameters of one MultiLeNet.", ""]
    for dataset in results["datasets"]:
        cells = [c for c in results["leaderboard"] if c["dataset"] == dataset]
        beat = [c["method"] for c in cells if c["beats_equal"]]
        lines += [f"## {TITLES[dataset]}", "",
                  f"{len(beat)} of {sum(c['method'] not in ('equal', 'stl') for c in cells)} methods beat the tuned "
                  f"equal weighting beyond one std" + (f": {', '.join(beat)}." if beat else "."), "",
                  "| rank | method | left (%) | right (%) | mean (%) | delta_m (%) | lr | epoch (s) | params | runs |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for c in cells:
            delta = "-" if c["delta_m"] is None else f"{c['delta_m']:+.2f}"
            lines.append(f"| {c['rank']} | {c['method']} | {_pm(c['left'], c['left_std'])} | "
                         f"{_pm(c['right'], c['right_std'])} | {_pm(c['mean'], c['mean_std'])} | {delta} | "
                         f"{c['learning_rate']:g} | {c['epoch_seconds']:.2f} | "
                         f"{'-' if c['params'] is None else format(c['params'], ',')} | {c['runs']} |")
        lines.append("")
    lines += ["The epoch time is the median training epoch (the single-task row: both nets).", "",
              "![Mean test accuracy per method and data set](leaderboard.png)", ""]
    return "\n".join(lines)


def plot_leaderboard(results, path):
    """One panel per data set: each method's mean accuracy +- std, methods in overall-rank
    order, the tuned equal weighting's band shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = list(results["overall_rank"]) or results["methods"]
    fig, axes = plt.subplots(1, len(results["datasets"]), figsize=(4.2 * len(results["datasets"]),
                                                                  0.22 * len(order) + 1.4), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, dataset in zip(axes, results["datasets"]):
        cells = [_cell(results, dataset, m) for m in order]
        y = np.arange(len(order))
        for i, c in enumerate(cells):
            if c is not None:
                color = "black" if c["method"] in ("equal", "stl") else ("tab:green" if c["beats_equal"] else "tab:blue")
                ax.errorbar(c["mean"], i, xerr=c["mean_std"], fmt="o", color=color, ms=3, capsize=2)
        equal = _cell(results, dataset, "equal")
        if equal:
            ax.axvspan(equal["mean"] - equal["mean_std"], equal["mean"] + equal["mean_std"], color="grey", alpha=0.2)
        ax.set_yticks(y, order, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(TITLES[dataset], fontsize=9)
        ax.set_xlabel("mean test accuracy (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
