"""Paper 001's training speed: the Trainer's alternating step on NN1 at l = 100 and each u
of Table 1's decisive cells, batch 600, SGD, exp_40 (`training/reproduce/evolving_dae.py`'s
run without its evaluations); each variant in a fresh process per round, the rounds
rotating the order.

    python -m benchmarks.evolving_dae_speed [--rounds 2] [--epochs 5]

Variants: *unstacked* is the package as it is; *sliced* reads a reconstruction's logits and
target from the stacked output by two slices, as `mtl_tf.tasks` did before (its gradient is
two full-size scatters and their sum); *unstacked, 1 thread* is one intra- and one inter-op
thread, the share of two runs side by side on two cores.

Writes `benchmarks/evolving_dae_speed.json` and `.md`: milliseconds per epoch (the median
over rounds of each process's median epoch), images per second (l + u per epoch) and the
hours a 5000-epoch run trains at that speed.
"""

import argparse
import json
import sys
import time

import numpy as np

from benchmarks.record import machine, write_result

UNLABELLED = (0, 1000, 10000, 40000)
VARIANTS = {"sliced": {"sliced": True}, "unstacked": {}, "unstacked, 1 thread": {"threads": 1}}
BASE = "sliced"
EPOCHS = 5000


def _sliced_loss():
    """The reconstruction loss and metric as `mtl_tf.tasks` computed them before: slices."""
    import tensorflow as tf

    from mtl_tf.tasks import Task

    loss, metric = Task.per_example_loss, Task.correct

    def per_example_loss(self, y_true, y_pred):
        if self.target != "output":
            return loss(self, y_true, y_pred)
        flat = tf.reshape(y_pred[:, 0], [tf.shape(y_pred)[0], -1])
        target = tf.reshape(y_pred[:, 1], [tf.shape(y_pred)[0], -1])
        return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=flat), axis=1)

    def correct(self, y_true, y_pred):
        if self.target != "output":
            return metric(self, y_true, y_pred)
        return tf.reduce_mean(tf.reshape(tf.square(tf.sigmoid(y_pred[:, 0]) - y_pred[:, 1]),
                                         [tf.shape(y_pred)[0], -1]), axis=1)

    Task.per_example_loss, Task.correct = per_example_loss, correct


def probe(unlabelled, epochs, options):
    """In this (fresh) process: two warm-up epochs, then `epochs` timed; prints their seconds."""
    import keras
    import tensorflow as tf

    if options.get("threads"):  # before TensorFlow's runtime starts
        tf.config.threading.set_intra_op_parallelism_threads(options["threads"])
        tf.config.threading.set_inter_op_parallelism_threads(options["threads"])
    if options.get("sliced"):
        _sliced_loss()
    import zoo
    from training.reproduce import evolving_dae as paper
    from training.trainer import Trainer
    from zoo import evolving_dae

    x, y = paper.draw(100, unlabelled, 0)
    keras.utils.set_random_seed(0)
    model = zoo.build("evolving_dae", architecture="nn1", corruption=0.1, seed=0)
    trainer = Trainer(model, tasks=evolving_dae.tasks(model), optimizer=keras.optimizers.SGD(paper.LEARNING_RATE),
                      seed=0, steps_per_execution=paper.STEPS_PER_EXECUTION, update="alternating",
                      weighting=paper.weighting("exp_40", EPOCHS), groups=evolving_dae.groups(model))
    seconds = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.start)

    trainer.fit(x, y, epochs=epochs + 2, batch_size=paper.BATCH_SIZE, verbose=0, callbacks=[Clock()])
    print(json.dumps({"seconds": seconds[2:]}))


def measure(rounds=2, epochs=5, log=print):
    from benchmarks.record import _run_json

    names = list(VARIANTS)
    rows = {}
    for u in UNLABELLED:
        runs = {n: [] for n in names}
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                out = _run_json([sys.executable, "-m", "benchmarks.evolving_dae_speed", "--probe", u, epochs,
                                 json.dumps(VARIANTS[name])])
                runs[name].append(float(np.median(out["seconds"])))
                log(f"u={u} round {r + 1}/{rounds} {name}: {1e3 * runs[name][-1]:.1f} ms per epoch")
        for name in names:
            ms = 1e3 * float(np.median(runs[name]))
            rows[f"{u} {name}"] = {
                "unlabelled": u, "variant": name, "ms_per_epoch": round(ms, 2),
                "ms_spread": [round(1e3 * min(runs[name]), 2), round(1e3 * max(runs[name]), 2)],
                "images_per_s": round((100 + u) / ms * 1e3),
                "vs_base": round(float(np.median(np.array(runs[BASE]) / np.array(runs[name]))), 3),
                "hours_per_run": round(ms * EPOCHS / 3.6e6, 2)}
    return {"machine": machine(), "rounds": rounds, "timed_epochs_per_process": epochs, "rows": rows}


def render(result):
    m = result["machine"]
    lines = ["# Paper 001's training speed (NN1, l = 100, batch 600, alternating update)", "",
             f"{m['date']}, {m['device']}; tensorflow {m['versions'].get('tensorflow')}. Each variant in a "
             f"fresh process per round ({result['rounds']} rounds, order rotating), two warm-up epochs and "
             f"{result['timed_epochs_per_process']} timed; training only (the reproduction also evaluates "
             "validation and test every 50 epochs).", "",
             f"| u | variant | ms per epoch (median) | spread | images/s | vs {BASE} | hours per {EPOCHS}-epoch run |",
             "|---|---|---|---|---|---|---|"]
    for row in result["rows"].values():
        lines.append(f"| {row['unlabelled']:,} | {row['variant']} | {row['ms_per_epoch']:.1f} | "
                     f"{row['ms_spread'][0]:.1f} to {row['ms_spread'][1]:.1f} | {row['images_per_s']:,} | "
                     f"{row['vs_base']:.2f} | {row['hours_per_run']:.2f} |")
    lines += ["", "*sliced*: the reconstruction read from the stacked (batch, 2, width) output by two slices, "
              "as before; *unstacked*: by `tf.unstack` with the target's gradient stopped (now); *1 thread*: one "
              "intra- and one inter-op thread.", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--probe", nargs=3, metavar=("U", "EPOCHS", "OPTIONS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        u, epochs, options = args.probe
        return probe(int(u), int(epochs), json.loads(options))
    write_result("evolving_dae_speed", measure(args.rounds, args.epochs), render)


if __name__ == "__main__":
    main()
