"""Each weighting strategy's training step time relative to equal weighting.

    python -m benchmarks.weighting_speed [--steps 30] [--epochs 3] [--batch 128] [--quick]
                                         [--names a,b]

The `hard_sharing` net (its default conv trunk) on MNIST with T = 2 tasks (digit,
parity) and T = 10 (one-vs-all per digit), batch 128, Adam. Gram strategies run in
representation mode and in parameter mode. Each run trains `epochs` epochs of `steps`
batches; the step time is the median of the steps' times after the first (tracing)
epoch. Everything in one process, one after another, so the ratios hold on any machine
(each ratio is to the equal-weighting step of its own run). Writes
benchmarks/weighting.json and benchmarks/weighting.md; `--names` measures only those
strategies and replaces their rows in the existing record.
"""

import argparse
import json
import time
from pathlib import Path

import keras
import numpy as np

import zoo
from mtl_tf import weighting
from mtl_tf.data import load_numpy
from mtl_tf.tasks import Task
from mtl_tf.weighting.per_task_gradients import PerTaskGradients
from training import Trainer

OUT = Path(__file__).resolve().parent
ARGUMENTS = {"fixed": lambda t: {"weights": [1.0] * t}, "stairs_t1": lambda t: {"t1": 1},
             "lin": lambda t: {"epochs": 3}, "lin_t1": lambda t: {"t1": 2},
             "exp_sigma": lambda t: {"sigma": 2.0}, "stch": lambda t: {"warmup_epochs": 0}}
GOAL = 1.3  # the issue's: every Gram strategy at T = 10, representation mode


class _StepTimer(keras.callbacks.Callback):
    """Each step's wall time, after the first (tracing) epoch: their median is robust to
    the machine's hiccups, where an epoch's total is not."""

    def on_train_begin(self, logs=None):
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch > 0:
            self.times.append(time.perf_counter() - self.start)


def _data(t, examples):
    images, labels = load_numpy("mnist", "train")
    x = images[:examples, ..., None].astype(np.float32) / 255.0
    labels = labels[:examples]
    if t == 2:
        return x, {"digit": labels, "parity": labels % 2}, [Task("digit", 10), Task("parity", 2)]
    return (x, {f"is_{d}": (labels == d).astype("int64") for d in range(t)},
            [Task(f"is_{d}", 2) for d in range(t)])


def step_time(name, mode, t, x, y, tasks, args):
    kwargs = ARGUMENTS.get(name, lambda t: {})(t)
    if mode is not None:
        kwargs["mode"] = mode
    keras.utils.set_random_seed(0)
    model = zoo.build("hard_sharing", tasks={task.name: task.num_outputs for task in tasks},
                      input_shape=(28, 28, 1))
    timer = _StepTimer()
    trainer = Trainer(model, tasks=tasks, weighting=weighting.get(name, **kwargs),
                      optimizer=keras.optimizers.Adam(1e-3))
    trainer.fit(x, y, epochs=args.epochs, batch_size=args.batch, callbacks=[timer], verbose=0)
    return float(np.median(timer.times))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--quick", action="store_true", help="three strategies, a smoke run")
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--names", default=None, help="comma-separated strategies to (re)measure")
    args = parser.parse_args(argv)
    names = ["equal", "mgda", "famo"] if args.quick else weighting.available()
    out = Path(args.out)
    rows, remeasured = [], []
    if args.names:
        names = args.names.split(",")
        kept = json.loads((out / "weighting.json").read_text())
        rows = [r for r in kept["rows"] if r["strategy"] not in names]
        remeasured = [m for m in kept.get("remeasured", []) if not set(m["names"]) <= set(names)]
    noise = {}
    for t in (2, 10):
        x, y, tasks = _data(t, args.steps * args.batch)
        # The baseline is the median of three equal-weighting runs (first, middle, last):
        # one run alone can be 20% off, which every ratio would inherit.
        baselines = [step_time("equal", None, t, x, y, tasks, args)]
        measured = []
        for index, name in enumerate(names):
            if index == len(names) // 2:
                baselines.append(step_time("equal", None, t, x, y, tasks, args))
            if t < weighting.strategy_class(name).min_tasks:  # Krum, TrimmedMean: T = 10 only
                continue
            strategy = weighting.get(name, **ARGUMENTS.get(name, lambda t: {})(t))
            if strategy.grad_mode is None or name == "gradnorm":
                modes = [None]
            elif isinstance(strategy, PerTaskGradients):
                modes = ["parameters"]
            else:
                modes = ["representation", "parameters"]
            for mode in modes:
                measured.append((name, mode, step_time(name, mode, t, x, y, tasks, args)))
                print(f"T={t:2d} {name:16s} {mode or 'loss':15s} {1000 * measured[-1][2]:8.1f} ms", flush=True)
        baselines.append(step_time("equal", None, t, x, y, tasks, args))
        base = float(np.median(baselines))
        noise[t] = [round(1000 * b, 2) for b in baselines]
        for name, mode, seconds in measured:
            rows.append({"strategy": name, "tasks": t, "mode": mode or "loss",
                         "step_ms": round(1000 * seconds, 2), "ratio": round(seconds / base, 2)})
    if args.names:  # the first run's baselines stay; this run's are recorded beside them
        remeasured.append({"names": names, "equal_baseline_runs_ms": noise})
        noise = kept["equal_baseline_runs_ms"]
    record = {"batch": args.batch, "steps": args.steps, "epochs": args.epochs, "net": "hard_sharing (conv)",
              "equal_baseline_runs_ms": noise, "remeasured": remeasured, "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "weighting.json").write_text(json.dumps(record, indent=1))
    write_markdown(out, record)


def _runs(noise):
    return "; ".join(f"T = {t}: {', '.join(map(str, v))} ms" for t, v in noise.items())


def write_markdown(out, record):
    """benchmarks/weighting.md from the record."""
    rows = record["rows"]
    lines = ["# Weighting strategies: step time relative to equal weighting",
             "", f"`python -m benchmarks.weighting_speed` (hard_sharing conv net, MNIST, batch "
             f"{record['batch']}; the median step of {record.get('epochs', 3) - 1} epochs of {record['steps']} "
             "steps after the tracing epoch). Ratios are to the median of three equal-weighting runs "
             f"of the same process (first, middle, last): {_runs(record['equal_baseline_runs_ms'])}, "
             "the measurement's noise."
             + "".join(f" Measured later in a run of their own (`--names`), with its own baselines "
                       f"({_runs(m['equal_baseline_runs_ms'])}): {', '.join(m['names'])}."
                       for m in record.get("remeasured", [])), "",
             "| strategy | mode | T = 2 ms | T = 2 ratio | T = 10 ms | T = 10 ratio |", "|---|---|---|---|---|---|"]
    keys = sorted(dict.fromkeys((r["strategy"], r["mode"]) for r in rows),
                  key=lambda key: (key[0], key[1] != "representation"))
    for strategy, mode in keys:
        cells = {r["tasks"]: r for r in rows if (r["strategy"], r["mode"]) == (strategy, mode)}
        lines.append(f"| {strategy} | {mode} | " + " | ".join(
            f"{cells[t]['step_ms']} | {cells[t]['ratio']}x" if t in cells else "- | -" for t in (2, 10)) + " |")
    slow = [r for r in rows if r["tasks"] == 10 and r["mode"] == "representation" and r["ratio"] > GOAL]
    lines += ["", f"Gram strategies above {GOAL}x equal weighting at T = 10 in representation mode: "
              + (", ".join(f"{r['strategy']} ({r['ratio']}x)" for r in slow) or "none") + ".",
              "Krum and the trimmed mean need 3 tasks or more: T = 10 only."]
    (out / "weighting.md").write_text("\n".join(lines) + "\n")

if __name__ == "__main__":
    main()
