"""Paper 001's Table 1: evolving loss weights between a classifier and its DAE stack.

Protocol (section 4, and the authors' material named in `zoo/evolving_dae.py`): l
labelled and u unlabelled images drawn (seeded) from MNIST `train50k`, validation on
`val10k`, test on `test`; pixels / 255; NN_K with tanh units; every network starts from
the same initial weights for a given seed (the baseline and every schedule); SGD with
learning rate 0.01, batch 600, lowered linearly to a tenth over the last tenth of the
epochs (the paper: "decreased over the last 500 epochs" of 5000; how is not published);
Algorithm 1's alternating update. The baseline is the supervised criterion alone on the l
labelled images. The table's figure is the test error at the last epoch (the paper's
reading); the error at the epoch chosen on validation is reported beside it.

Not reproduced: for stairs_100 the paper tuned the DAEs' learning rate on validation data;
here every schedule uses 0.01. The corruption level is published nowhere: it is chosen on
validation data (NN1, l = 100, u = 10^4, exp_40, the first seed) among `CORRUPTIONS`.
"""

import dataclasses
import functools
import json
import time

import keras
import numpy as np

import zoo
from mtl_tf.data import load_numpy
from mtl_tf.data.paths import atomic_path, atomic_write_bytes
from training.reproduce.common import (
    Workdir, check_only, check_profile, device, format_seconds, machine_line, mean_std,
    run_settings, status, status_line, unfinished_path, versions, write_json,
)
from training.trainer import Trainer
from zoo import evolving_dae

PAPER = "001_9bc79a8a3513fb16.txt"
NAME = "evolving_dae"
REST = "rest"  # u = 5 * 10^4 - l
FULL_LENGTH = (5000, 50)  # the paper's epochs, and an evaluation every 50
PROFILES = {
    "full": {"epochs": 5000, "runs": 3, "labelled": (100, 1000, 10000),
             "unlabelled": (0, 1000, 2000, 5000, 10000, 20000, 40000, REST),
             "architectures": ("nn1", "nn2", "nn3", "nn4"), "eval_every": 50},
    # The baseline and the u = 0 cells make one or two steps per epoch: cheap at full length.
    "quick": {"epochs": 150, "runs": 3, "labelled": (100,), "unlabelled": (0, 1000, 10000, 40000),
              "architectures": ("nn1",), "eval_every": 10, "full_length": FULL_LENGTH},
}
SCHEDULES = ("stairs_100", "lin_100", "lin", "exp_40")
# Beyond the paper: a learned weighting, and a control with the same batches but no
# reconstruction (lambda_r = 0): with u > 0 each epoch holds many more (smaller) supervised
# steps than the baseline's, which alone can lower the error.
LEARNED = ("uncertainty", "no_reconstruction")
CORRUPTIONS = (0.1, 0.2, 0.3, 0.5)
BATCH_SIZE = 600
LEARNING_RATE = 0.01
STEPS_PER_EXECUTION = 50
# Table 1 (a), NN1: baseline error (%) per l, then error - baseline (points) per schedule and u.
PAPER_BASELINE = {("nn1", 100): 31.0, ("nn1", 1000): 12.85, ("nn1", 10000): 9.08,
                  ("nn2", 100): 31.48, ("nn3", 100): 33.58, ("nn4", 100): 30.53,
                  ("nn2", 1000): 12.32, ("nn3", 1000): 11.96, ("nn4", 1000): 12.54,
                  ("nn2", 10000): 5.62, ("nn3", 10000): 5.69, ("nn4", 10000): 5.5}
_U = (0, 1000, 2000, 5000, 10000, 20000, 40000, REST)
_A = {  # l -> schedule -> differences over _U
    100: {"stairs_100": (0.03, -0.1, -0.17, -0.16, -0.28, -0.28, -0.46, -0.19),
          "lin_100": (0.03, -0.87, -1.35, -1.69, -2.21, -1.82, -2.39, -1.89),
          "lin": (1.32, -0.19, -1.03, -1.78, -2.03, -2.26, -2.62, -2.03),
          "exp_40": (0.03, -0.85, -1.46, -1.91, -2.21, -2.42, -2.44, -2.44)},
    1000: {"stairs_100": (0.03, 0.09, 0.009, 0.05, 0.0, -0.02, -0.049, -0.06),
           "lin_100": (0.0, -0.71, -0.98, -1.43, -1.6, -1.83, -1.63, -1.68),
           "lin": (1.5, 0.33, -0.23, -0.95, -1.12, -1.46, -1.37, -1.56),
           "exp_40": (0.05, -0.73, -0.95, -1.44, -1.44, -1.78, -1.7, -1.75)},
    10000: {"stairs_100": (0.03, 0.03, 0.03, 0.03, 0.01, 0.01, 0.01, 0.01),
            "lin_100": (0.01, -0.08, -0.2, -0.26, -0.5, -0.63, -0.63, -0.63),
            "lin": (0.95, 0.85, 0.74, 0.31, -0.1, -0.44, -0.63, -0.63),
            "exp_40": (-0.04, -0.08, -0.21, -0.3, -0.51, -0.75, -0.56, -0.56)},
}
_B = {  # Table 1 (b), exp_40: (l, architecture) -> differences over _U
    (100, "nn2"): (0.01, -1.05, -2.03, -2.32, -2.26, -2.4, -2.12, -1.99),
    (100, "nn3"): (-0.01, -0.83, -1.35, -1.71, -1.29, -0.78, -1.17, -1.23),
    (100, "nn4"): (0.03, -0.92, -1.17, -1.31, -0.72, -0.82, -1.65, -0.88),
    (1000, "nn2"): (0.02, -0.55, -0.78, -1.15, -1.14, -1.25, -1.08, -1.23),
    (1000, "nn3"): (-0.08, -0.58, -0.77, -1.23, -1.29, -1.48, -1.3, -1.3),
    (1000, "nn4"): (-0.03, -0.8, -1.18, -1.56, -1.76, -1.88, -1.92, -1.85),
    (10000, "nn2"): (-0.11, -0.2, -0.4, -0.54, -0.75, -0.81, -0.81, -0.81),
    (10000, "nn3"): (-0.03, -0.07, -0.01, -0.18, -0.22, -0.41, -0.42, -0.42),
    (10000, "nn4"): (0.08, 0.12, 0.04, -0.04, -0.24, -0.08, -0.55, -0.55),
}


def run_length(config, setting):
    """(epochs, evaluate every) of `setting`'s runs under the profile `config`: the
    profile's, or full length for the baseline and the u = 0 cells where it says so."""
    if config.get("full_length") and (setting.schedule == "baseline" or setting.unlabelled == 0):
        return config["full_length"]
    return config["epochs"], config["eval_every"]


def paper_difference(architecture, labelled, unlabelled, schedule):
    if architecture == "nn1" and schedule in SCHEDULES:
        return _A[labelled][schedule][_U.index(unlabelled)]
    if architecture != "nn1" and schedule == "exp_40":
        return _B[(labelled, architecture)][_U.index(unlabelled)]
    return None


@dataclasses.dataclass(frozen=True)
class Setting:
    architecture: str
    labelled: int
    unlabelled: object = 0  # int or REST
    schedule: str = "baseline"

    @property
    def name(self):
        if self.schedule == "baseline":
            return f"{self.architecture} l={self.labelled} baseline"
        return f"{self.architecture} l={self.labelled} u={self.unlabelled} {self.schedule}"


def settings(profile):
    config = PROFILES[profile]
    result = []
    for architecture in config["architectures"]:
        schedules = SCHEDULES if architecture == "nn1" else ("exp_40",)
        for labelled in config["labelled"]:
            result.append(Setting(architecture, labelled))
            for schedule in (*schedules, *LEARNED):
                result += [Setting(architecture, labelled, u, schedule) for u in config["unlabelled"]]
    return result


# The cells that say whether the reconstructions or the batching lower the error (the
# `no_reconstruction` control beside two schedules), at l = 100 where the paper's gains are
# largest: the full profile runs them first, every run, u = 10^4 before 4 x 10^4, and the
# control right after exp_40 (the paper's best schedule), so each pair is complete first.
DECISIVE = (Setting("nn1", 100),) + tuple(Setting("nn1", 100, u, s) for u in (10000, 40000)
                                          for s in ("exp_40", "no_reconstruction", "lin"))
# The corruption level is chosen on this cell's first run (see `choose_corruption`).
CHOICE = Setting("nn1", 100, 10000, "exp_40")


def order(profile, runs):
    """The (setting, run) pairs in the order a profile trains them. Full: the decisive
    cells' runs, then the first run of every other cell from the cheapest (fewest steps, so
    the most cells per hour), then the second runs, then the third. Quick: setting by
    setting."""
    everything = settings(profile)
    if profile != "full":
        return [(s, r) for s in everything for r in range(runs)]
    epochs = PROFILES[profile]["epochs"]
    rest = sorted((s for s in everything if s not in DECISIVE), key=lambda s: steps(s, epochs))
    return [(s, r) for s in DECISIVE for r in range(runs)] + [(s, r) for r in range(runs) for s in rest]


def draw(labelled, unlabelled, seed):
    """(x, y) training arrays: `labelled` images with their labels and `unlabelled` ones
    with label -1, drawn from MNIST `train50k` by a generator seeded with `seed`."""
    images, labels = load_numpy("mnist", "train50k")
    unlabelled = len(images) - labelled if unlabelled == REST else unlabelled
    if labelled + unlabelled > len(images):
        raise ValueError(f"l + u = {labelled + unlabelled} exceeds the {len(images)} images of "
                         f"`train50k`. Received: labelled={labelled}, unlabelled={unlabelled}")
    order = np.random.default_rng(seed).permutation(len(images))[: labelled + unlabelled]
    y = labels[order].astype("int64")
    y[labelled:] = -1
    return (images[order] / 255.0).astype("float32"), y


def _split(name):
    images, labels = load_numpy("mnist", name)
    return (images / 255.0).astype("float32"), labels.astype("int64")


def weighting(schedule, epochs):
    return {"stairs_100": {"class_name": "stairs_t1", "config": {"t1": 100}},
            "lin_100": {"class_name": "lin_t1", "config": {"t1": 100}},
            "lin": {"class_name": "lin", "config": {"epochs": epochs}},
            "exp_40": {"class_name": "exp_sigma", "config": {"sigma": 40}},
            "uncertainty": "uncertainty",
            "no_reconstruction": None}[schedule]


class LastTenthDecay(keras.callbacks.Callback):
    """The learning rate, constant, then lowered linearly to a tenth over the last tenth
    of the epochs."""

    def __init__(self, base, epochs):
        super().__init__()
        self.base, self.epochs = base, epochs

    def on_epoch_begin(self, epoch, logs=None):
        start = self.epochs - max(self.epochs // 10, 1)
        fraction = max(0.0, (epoch - start + 1) / (self.epochs - start))
        self.model.optimizer.learning_rate = self.base * (1.0 - 0.9 * min(fraction, 1.0))


class ClassError(keras.callbacks.Callback):
    """Every `every` epochs and at the last, the classifier's error (%) on validation and
    test, kept in `curve` as (epoch, val, test). With `path`, the curve and the training
    seconds so far are saved there at each point and read back by a resumed run (up to
    the epoch its checkpoint holds)."""

    def __init__(self, val, test, every, epochs, path=None):
        super().__init__()
        self.val, self.test, self.every, self.epochs, self.path = val, test, every, epochs, path
        self.trainer, self.curve, self.earlier_seconds = None, [], 0.0

    def set_trainer(self, trainer):
        self.trainer = trainer

    def on_train_begin(self, logs=None):
        self.start = time.time()
        if self.path is not None and self.path.exists():
            saved, reached = json.loads(self.path.read_text()), int(self.trainer.epoch.numpy())
            self.curve = [tuple(point) for point in saved["curve"] if point[0] <= reached]
            self.earlier_seconds = saved["seconds"]

    @property
    def seconds(self):
        return self.earlier_seconds + time.time() - self.start

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0 or epoch + 1 == self.epochs:
            errors = [100.0 * (1.0 - float(np.mean(np.argmax(self.trainer.model.predict(
                x, batch_size=5000, verbose=0)["classes"], axis=1) == y))) for x, y in (self.val, self.test)]
            self.curve.append((epoch + 1, *errors))
            if self.path is not None:
                write_json(self.path, {"curve": self.curve, "seconds": round(self.seconds, 2)})


def train_run(setting, seed, epochs, corruption, eval_every, log=None, run_dir=None):
    """One run; with `run_dir`, checkpointed at every evaluation and resumed from there."""
    x, y = draw(setting.labelled, 0 if setting.schedule == "baseline" else setting.unlabelled, seed)
    keras.utils.set_random_seed(seed)  # the same initial weights for every setting of this seed
    model = zoo.build("evolving_dae", architecture=setting.architecture, corruption=corruption, seed=seed)
    tasks = evolving_dae.tasks(model)
    supervised_only = {"class_name": "fixed", "config": {"weights": [1.0] + [0.0] * (len(tasks) - 1)}}
    if setting.schedule == "baseline":
        kwargs = {"weighting": supervised_only}
    elif setting.schedule == "no_reconstruction":
        kwargs = {"weighting": supervised_only, "update": "alternating", "groups": evolving_dae.groups(model)}
    else:
        kwargs = {"weighting": weighting(setting.schedule, epochs), "update": "alternating",
                  "groups": evolving_dae.groups(model)}
    trainer = Trainer(model, tasks=tasks, optimizer=keras.optimizers.SGD(LEARNING_RATE), seed=seed,
                      steps_per_execution=STEPS_PER_EXECUTION, run_dir=run_dir, checkpoint_every=eval_every,
                      **kwargs)
    errors = ClassError(_split("val10k"), _split("test"), eval_every, epochs,
                        path=run_dir / "curve.json" if run_dir else None)
    trainer.fit(x, y, epochs=epochs, batch_size=BATCH_SIZE, verbose=0,
                callbacks=[LastTenthDecay(LEARNING_RATE, epochs), errors])
    seconds = errors.seconds
    curve = np.asarray(errors.curve)
    chosen = int(np.argmin(curve[:, 1]))
    return {"setting": setting.name, "run_seed": seed, "epochs": epochs, "corruption": corruption,
            "seconds": round(seconds, 2), "test_error": float(curve[-1, 2]),
            "test_error_chosen": float(curve[chosen, 2]), "chosen_epoch": int(curve[chosen, 0]),
            "curve": [[int(e), round(float(v), 3), round(float(t), 3)] for e, v, t in curve]}


def _trial(name, run, *, epochs, every, seed, unfinished):
    """The trial of the corruption level `name` ("corruption LEVEL"): a run of `CHOICE`."""
    level = float(name.split()[1])
    record = train_run(CHOICE, seed, epochs, level, every, run_dir=unfinished_path(unfinished, name, run))
    return {**record, "setting": name, "validation_error": min(v for _, v, _ in record["curve"])}


def choose_corruption(workdir, epochs, eval_every, seed, log, jobs=1, train=True):
    """The corruption level with the lowest validation error on `CHOICE` (NN1, l = 100,
    u = 10^4, exp_40), the first seed; recorded in the workdir like a run. Each level's
    trial is a run of its own (checkpointed, resumed, recorded whole once finished), so a
    choice cut off part-way goes on where it stopped, and the chosen level's trial is the
    first run of `CHOICE` (same setting, seed and length), not trained twice. With
    `train` False, the choice must have been made already."""
    found = workdir.finished("corruption choice", 0)
    if found is None and not train:
        raise ValueError(f"Nothing to report in {str(workdir.out)!r}: the corruption level is not chosen "
                         f"yet (its trials train first).")
    if found is None:
        names = [f"corruption {level}" for level in CORRUPTIONS]
        trials = run_settings(workdir, names, 1, names, functools.partial(
            _trial, epochs=epochs, every=eval_every, seed=seed, unfinished=str(workdir.unfinished_root)),
            lambda r: f"validation error {r['validation_error']:.2f}%", log, jobs=jobs)
        errors = {name.split()[1]: records[0]["validation_error"] for name, records in trials.items()}
        found = {"setting": "corruption choice", "validation_error": errors,
                 "chosen": float(min(errors, key=errors.get))}
        workdir.save_run("corruption choice", 0, found)
    log(f"[corruption] {found['chosen']} (validation error % by level: {found['validation_error']})")
    return found


def _cell(name, run, *, cells, config, seed, corruption, unfinished, reuse=None):
    """Run `run` of the cell `name`; `reuse` is the chosen corruption level's trial, which
    is the first run of `CHOICE`."""
    setting = cells[name]
    if reuse is not None and setting == reuse[0] and run == 0:
        return {k: v for k, v in reuse[1].items() if k != "validation_error"} | {"setting": name}
    epochs, every = run_length(config, setting)
    return train_run(setting, seed * 1000 + run, epochs, corruption, every,
                     run_dir=unfinished_path(unfinished, name, run))


def reproduce(profile, out, runs=None, seed=0, only=None, log=print, records=None, jobs=1):
    """Runs every setting (skipping runs already in `out` or `records`), in `jobs`
    processes, then writes `results.json`, `report.md` and `schedules.png` into `out`.
    Returns the results dict."""
    config, runs = check_profile(PROFILES, profile, runs)
    workdir = Workdir(out, {"name": NAME, "profile": profile, "seed": seed, "epochs": config["epochs"],
                            "batch_size": BATCH_SIZE, "learning_rate": LEARNING_RATE,
                            **({"full_length": list(config["full_length"])} if config.get("full_length") else {})},
                      records)
    cells = {s.name: s for s in settings(profile)}
    check_only(only, list(cells))
    chosen = [n for n in cells if only is None or n in only]
    log(f"paper 001, profile {profile}: {len(chosen)} settings x {runs} runs into {workdir.out}")
    corruption = choose_corruption(workdir, *run_length(config, CHOICE), seed * 1000, log, jobs,
                                   train=only is None or len(only) > 0)
    trial = workdir.finished(f"corruption {corruption['chosen']}", 0)
    train = functools.partial(_cell, cells=cells, config=config, seed=seed, corruption=corruption["chosen"],
                              unfinished=str(workdir.unfinished_root),
                              reuse=(CHOICE, trial) if trial and "curve" in trial else None)
    found = run_settings(workdir, list(cells), runs, chosen, train, lambda r: (
        f"test error {r['test_error']:.2f}% at the last epoch, {r['test_error_chosen']:.2f}% at epoch "
        f"{r['chosen_epoch']} chosen on validation"), log,
        order=[(s.name, r) for s, r in order(profile, runs)], jobs=jobs)
    results = summarise(found, profile, runs, seed, config, corruption, workdir.wall_seconds)
    results["trained_on"] = workdir.trained_on
    write_json(workdir.out / "results.json", results)
    plot_schedules(config["epochs"], workdir.out / "schedules.png")
    report = render_report(results, found, profile)
    atomic_write_bytes(workdir.out / "report.md", report.encode())
    log(report)
    return results


def _differences(found, setting, baseline, key):
    """Per run (paired by seed) error - baseline error, in points."""
    base = {r["run_seed"]: r[key] for r in found.get(baseline.name, [])}
    return [r[key] - base[r["run_seed"]] for r in found.get(setting.name, []) if r["run_seed"] in base]


def summarise(found, profile, runs, seed, config, corruption, wall_seconds):
    rows = []
    for setting in settings(profile):
        done = found.get(setting.name, [])
        for key in ("test_error", "test_error_chosen"):
            if setting.schedule == "baseline":
                values = [r[key] for r in done]
                paper = PAPER_BASELINE.get((setting.architecture, setting.labelled)) if key == "test_error" else None
                metric = f"{key}_pct"
            else:
                values = _differences(found, setting, Setting(setting.architecture, setting.labelled), key)
                paper = paper_difference(setting.architecture, setting.labelled, setting.unlabelled,
                                         setting.schedule) if key == "test_error" else None
                metric = f"{key}_minus_baseline_points"
            mean, std = mean_std(values) if values else (None, None)
            rows.append({"setting": setting.name, "task": "classes", "metric": metric, "ours": mean,
                         "ours_std": std, "runs": len(values), "paper": paper})
    cost = run_seconds(found)
    cells = {s.name: s for s in settings(profile)}
    return {"paper": PAPER, "name": NAME, "profile": profile, "device": device(), "versions": versions(),
            "wall_seconds": round(wall_seconds, 1), "seed": seed, "epochs": config["epochs"],
            "full_length_epochs": (config.get("full_length") or (None,))[0], "runs_per_setting": runs,
            "batch_size": BATCH_SIZE, "learning_rate": LEARNING_RATE, "corruption": corruption,
            "train_seconds": round(sum(r["seconds"] for rs in found.values() for r in rs), 1),
            "status": status([(s.name, r) for s, r in order(profile, runs)], found, None if cost is None else
                             lambda name: cost(cells[name], run_length(config, cells[name])[0])),
            "full_profile_hours": None if cost is None else round(sum(
                cost(s, PROFILES["full"]["epochs"]) for s, _ in order("full", PROFILES["full"]["runs"])) / 3600, 1),
            "rows": rows}


def images(setting):
    """The images of an epoch: the labelled ones, and the unlabelled ones but for the baseline."""
    if setting.schedule == "baseline":
        return setting.labelled
    return 50000 if setting.unlabelled == REST else setting.labelled + setting.unlabelled


def steps(setting, epochs):
    """Training steps of a run: per epoch, one per batch of the epoch's images, and with a
    schedule (alternating update) one per group of tasks."""
    batches = -(-images(setting) // BATCH_SIZE)
    return epochs * batches * (1 if setting.schedule == "baseline" else 2)


def run_seconds(found):
    """A run's training seconds as these records measured them: seconds = a x epochs +
    b x steps, fitted over the finished runs (an epoch's fixed cost, its evaluations
    included, and a step's), or steps at their mean rate while the runs cannot tell the
    two apart. NN2-4 are counted at NN1's speed, so their hours are a lower bound.
    Returns `cost(setting, epochs)`, or None before any run."""
    by_name = {s.name: s for s in settings("full") + settings("quick")}
    done = [(r["epochs"], steps(by_name[r["setting"]], r["epochs"]), r["seconds"])
            for rs in found.values() for r in rs if r["setting"] in by_name]
    if not done:
        return None
    epochs, counts, seconds = (np.array(column, dtype=float) for column in zip(*done))
    (a, b), *_ = np.linalg.lstsq(np.stack([epochs, counts], axis=1), seconds, rcond=None)
    if a < 0 or b <= 0 or len({round(c / e, 6) for c, e in zip(counts, epochs)}) < 2:
        a, b = 0.0, seconds.sum() / counts.sum()
    return lambda setting, n: a * n + b * steps(setting, n)


def _row(results, setting, metric):
    return next(r for r in results["rows"] if r["setting"] == setting.name and r["metric"].startswith(metric))


def _fmt(row, signed=True, runs=None):
    """A cell: mean +- std, and how many of the `runs` seeds it has while some are missing."""
    if row["ours"] is None:
        return "-"
    value = f"{row['ours']:+.2f}" if signed else f"{row['ours']:.2f}%"
    partial = f" ({row['runs']} of {runs} runs)" if runs and row["runs"] < runs else ""
    return f"{value} +- {row['ours_std']:.2f}{partial}"


def render_report(results, found, profile):
    config, runs = PROFILES[profile], results["runs_per_setting"]
    lines = [
        "# Paper 001 reproduced: deep multi-task learning with evolving weights (DAE stacks)",
        "",
        status_line(results["status"]),
        "",
        *_finding(found, config, runs),
        "Data: real MNIST, as the paper (l labelled and u unlabelled images from `train50k`, "
        "validation `val10k`, test `test`).",
        "",
        f"- Profile: **{profile}**. " + ("The paper's protocol: 5000 epochs." if profile == "full" else
                                          f"The paper's protocol shrunk: {results['epochs']} epochs instead "
                                          f"of 5000 (t1 = 100 and sigma = 40 kept in epochs), l = 100 and u in "
                                          f"{{{', '.join(map(str, config['unlabelled']))}}} only, NN1 only. The "
                                          f"baseline and the u = 0 cells, one batch per epoch, run the paper's "
                                          f"{results['full_length_epochs']} epochs, so every u > 0 cell is compared "
                                          f"with the baseline at full length."),
        f"- SGD, learning rate {results['learning_rate']} lowered linearly to a tenth over the last tenth of "
        f"the epochs, batch {results['batch_size']}, Algorithm 1 (a reconstruction step on the whole batch, "
        "then a supervised step on its labelled part); tanh units, Glorot-uniform weights, sigmoid "
        "reconstructions with cross-entropy (Crino's defaults); the same initial weights for the baseline "
        "and every schedule of a seed.",
        f"- Corruption (binomial masking), chosen on validation data among {list(CORRUPTIONS)}: "
        f"**{results['corruption']['chosen']}** (validation error % by level: "
        f"{results['corruption']['validation_error']}).",
        f"- The corruption level's trial at {results['corruption']['chosen']} is also the first run of "
        f"{CHOICE.name} (the same setting, seed and length).",
        "- Not as the paper: stairs_100's DAEs are trained at the same learning rate as everything else "
        "(the paper tuned it on validation data).",
        "- Beyond the paper (`paper` null): `uncertainty` weighting (Kendall et al. 2018) in place of a "
        "schedule, and `no_reconstruction`, the same alternating batches with lambda_r = 0: with u > 0 an "
        "epoch makes one supervised step per batch on its few labelled images (about l / (l + u) of 600), "
        "where the baseline makes one per epoch at l = 100, so this column separates the effect of the "
        "reconstructions from that of the batching.",
        f"- Runs: {results['runs_per_setting']} per setting (seeds {results['seed']} * 1000 + i: the "
        "labelled/unlabelled draw and the initial weights); differences are paired by seed.",
        f"- Machine: {machine_line(results)}. Versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()) + ".",
        f"- Wall time: {format_seconds(results['wall_seconds'])} over all sittings "
        f"({format_seconds(results['train_seconds'])} of it training)."
        + (f" At these runs' speed the full profile trains for about {results['full_profile_hours']:,.0f} h "
           "(NN2-4 counted at NN1's speed)." if results.get("full_profile_hours") else ""),
        "",
    ]
    for key, title in (("test_error", "test error at the last epoch (the paper's reading)"),
                       ("test_error_chosen", "test error at the epoch chosen on validation")):
        lines += [f"## Table 1 (a), NN1: {title}", "",
                  "Baseline: error in %. Below it: error minus the baseline's, in points (negative: "
                  "better than the baseline), ours (mean +- std over seeds) / paper.", ""]
        for labelled in config["labelled"]:
            if "nn1" not in config["architectures"]:
                continue
            base = _row(results, Setting("nn1", labelled), key)
            paper_base = PAPER_BASELINE[("nn1", labelled)] if key == "test_error" else None
            lines += [f"**l = {labelled}**, baseline {_fmt(base, signed=False, runs=runs)}"
                      + (f" (paper {paper_base}%)" if paper_base is not None else ""), "",
                      "| u | " + " | ".join((*SCHEDULES, *LEARNED)) + " |", "|---" * (len(SCHEDULES) + len(LEARNED) + 1) + "|"]
            for u in config["unlabelled"]:
                cells = []
                for schedule in (*SCHEDULES, *LEARNED):
                    row = _row(results, Setting("nn1", labelled, u, schedule), key)
                    paper = row["paper"]
                    cells.append(_fmt(row, runs=runs) + ("" if paper is None else f" / {paper:+.2f}"))
                lines.append(f"| {u if u != REST else '5e4 - l'} | " + " | ".join(cells) + " |")
            lines.append("")
        deeper = [a for a in config["architectures"] if a != "nn1"]
        if deeper:
            lines += [f"## Table 1 (b), exp_40: {title}", ""]
            for labelled in config["labelled"]:
                lines += [f"**l = {labelled}**", "", "| u | " + " | ".join(deeper) + " |", "|---" * (len(deeper) + 1) + "|",
                          "| baseline | " + " | ".join(_fmt(_row(results, Setting(a, labelled), key), signed=False, runs=runs)
                                                     for a in deeper) + " |"]
                for u in config["unlabelled"]:
                    cells = []
                    for a in deeper:
                        row = _row(results, Setting(a, labelled, u, "exp_40"), key)
                        cells.append(_fmt(row, runs=runs) + ("" if row["paper"] is None else f" / {row['paper']:+.2f}"))
                    lines.append(f"| {u if u != REST else '5e4 - l'} | " + " | ".join(cells) + " |")
                lines.append("")
    lines += _against_control(found, config) + _times(found, profile)
    lines += ["## The schedules (Figure 1)", "", "![lambda_s and lambda_r per epoch](schedules.png)", ""]
    return "\n".join(lines) + "\n"


def _finding(found, config, runs):
    """The report's answer so far, from the cells whose control and schedules have every
    seed: do the schedules beat the `no_reconstruction` control (the reconstructions'
    own effect), and does the control beat the baseline (the batching's)?"""
    lines = []
    for labelled in config["labelled"]:
        for u in config["unlabelled"]:
            control = Setting("nn1", labelled, u, "no_reconstruction")
            if u == 0 or len(found.get(control.name, [])) < runs:
                continue
            parts, beaten = [], []
            for schedule in SCHEDULES:
                values = _differences(found, Setting("nn1", labelled, u, schedule), control, "test_error")
                if len(values) < runs:
                    continue
                mean, std = mean_std(values)
                lower = sum(v < 0 for v in values)
                parts.append(f"{schedule} {mean:+.2f} +- {std:.2f} (lower in {lower} of {runs} seeds)")
                if lower == runs:
                    beaten.append(schedule)
            if not parts:
                continue
            batching = _differences(found, control, Setting("nn1", labelled), "test_error")
            verdict = (f"{', '.join(beaten)} lower than the control in every seed: the reconstructions "
                       "add to what the alternating batches give" if beaten else
                       "no schedule is lower than the control in every seed: the reconstructions add "
                       "nothing measurable to the alternating batches")
            against_baseline = ("" if not batching else  # the baseline's seeds not finished yet
                                " The control against the baseline: {:+.2f} +- {:.2f} points.".format(
                                    *mean_std(batching)))
            lines.append(f"- l = {labelled}, u = {u if u != REST else '5e4 - l'}, {runs} seed"
                         f"{'s' if runs > 1 else ''}, against the control: {'; '.join(parts)}. So {verdict}."
                         + against_baseline)
    if not lines:
        return []
    return (["**What the finished cells show** (test error at the last epoch, paired by seed, in points; "
             "negative: lower):", ""] + lines + [""])


def _against_control(found, config):
    """Each schedule's test error minus the `no_reconstruction` control's, paired by seed:
    the same batches with and without the reconstructions."""
    lines = ["## Do the reconstructions help? Each schedule against the no_reconstruction control", "",
             "Test error at the last epoch minus the control's (the same alternating batches, lambda_r = 0), "
             "in points, paired by seed: mean +- std, then each seed's difference. Negative: the "
             "reconstructions lower the error beyond what the batching does.", "",
             "| l | u | " + " | ".join((*SCHEDULES, "uncertainty")) + " |", "|---" * (len(SCHEDULES) + 3) + "|"]
    for labelled in config["labelled"]:
        for u in config["unlabelled"]:
            if u == 0:
                continue
            control = Setting("nn1", labelled, u, "no_reconstruction")
            cells = []
            for schedule in (*SCHEDULES, "uncertainty"):
                values = _differences(found, Setting("nn1", labelled, u, schedule), control, "test_error")
                if not values:
                    cells.append("-")
                    continue
                mean, std = mean_std(values)
                sign = ("lower in every seed" if max(values) < 0 else "higher in every seed" if min(values) > 0
                        else "mixed")
                cells.append(f"{mean:+.2f} +- {std:.2f} ({', '.join(f'{v:+.2f}' for v in values)}; {sign})")
            lines.append(f"| {labelled} | {u if u != REST else '5e4 - l'} | " + " | ".join(cells) + " |")
    return lines + [""]


def _times(found, profile):
    """How long each cell's runs trained, and at what speed."""
    lines = ["## Training time per run", "", "| setting | epochs | runs | minutes per run | images/s |",
             "|---|---|---|---|---|"]
    for setting in settings(profile):
        records = found.get(setting.name, [])
        if not records:
            continue
        seconds = float(np.mean([r["seconds"] for r in records]))
        lines.append(f"| {setting.name} | {records[0]['epochs']:,} | {len(records)} | {seconds / 60:.1f} | "
                     f"{images(setting) * records[0]['epochs'] / seconds:,.0f} |")
    return lines + ["", "Images per second count each epoch's l + u images once (the reconstruction and the "
                    "supervised step both pass over them) and include the evaluations.", ""]


def plot_schedules(epochs, path):
    """Figure 1: lambda_s (solid) and lambda_r (dashed) per epoch for the four schedules."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mtl_tf import weighting as weighting_lib

    fig, ax = plt.subplots(figsize=(7, 4))
    t = np.arange(epochs)
    for schedule in SCHEDULES:
        spec = weighting(schedule, epochs)
        strategy = weighting_lib.get(spec).build(2)
        lam = np.array([float(strategy.lambda_s(float(e))) for e in t])
        line, = ax.plot(t, lam, label=f"{schedule}: lambda_s")
        ax.plot(t, 1 - lam, "--", color=line.get_color(), alpha=0.6)
    ax.set_xlabel("epoch")
    ax.set_ylabel("importance weight")
    ax.set_title(f"Paper 001's schedules over {epochs} epochs (dashed: lambda_r = 1 - lambda_s)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path
