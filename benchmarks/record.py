"""The speed record: `make bench` (`python -m benchmarks.record [--quick]`) measures each
figure, compares side by side in one run, and writes `benchmarks/results.json` (machine,
date, versions, and under `"metrics"` one number per key of `GOALS`) and
`benchmarks/results.md`.

Comparisons are interleaved: each round runs every contender once, in an order that
rotates from round to round (A B, B A, ...), after a warm-up run each; a figure is the
median over rounds and a ratio comes with the spread of the per-round ratios. `--quick`
shrinks every measurement to seconds (for the test that checks the file's keys); its
figures are not the record.

A key whose peer is not installed here (PyTorch is a benchmark-only extra) is written as
null with the reason under `"missing"`.
"""

import argparse
import contextlib
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

import mtl_tf  # noqa: F401  (TensorFlow's start-up without the CPU machine's spurious device errors)

HERE = Path(__file__).resolve().parent

# key -> (goal, "min" if the figure must be at least the goal, else "max"), from issue 17.
GOALS = {
    "train_vs_fit_ratio": (1.0, "min"),
    "train_vs_fit_ratio_hard_sharing": (1.0, "min"),
    "train_vs_torch_ratio": (1.0, "min"),
    "task_grads_T10_rep_ratio": (1.2, "max"),
    "task_grads_T10_shared_weights_ratio": (1.5, "max"),
    "selective_sharing_overhead_pct": (5.0, "max"),
    "serving_latency_ratio": (1.0, "max"),
    "data_vs_train_ratio": (10.0, "min"),
    "epoch_vs_steady_ratio": (0.97, "min"),
    "train_flops_fraction_of_peak": (0.75, "min"),
    "train_rss_vs_torch_ratio": (1.5, "max"),
}


# === Timing ===================================================================================
def interleaved(contenders, rounds, warmup=1):
    """Runs each callable of `contenders` (name -> callable) `warmup` times, then `rounds`
    rounds in which each runs once, the order rotating from round to round (A B, B A, ...).
    Returns name -> list of seconds, one per round."""
    names = list(contenders)
    for name in names:
        for _ in range(warmup):
            contenders[name]()
    times = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - start)
    return times


def ratio(numerator, denominator):
    """The median of `numerator[i] / denominator[i]` over rounds, with its min and max."""
    per_round = np.asarray(numerator) / np.asarray(denominator)
    return {"median": float(np.median(per_round)), "min": float(per_round.min()), "max": float(per_round.max()),
            "rounds": len(per_round)}


# === Data and models ==========================================================================
def _mnist(n):
    from mtl_tf.data import load_numpy

    images, labels = load_numpy("mnist", "train")
    x = images[:n, ..., None].astype(np.float32) / 255.0
    # Two tasks labelled on every example, so Keras `fit()` (which has no label mask) trains
    # the same thing: the digit, and the digit shifted by one.
    return x, {"mnist": labels[:n].astype(np.int64), "shifted": ((labels[:n] + 1) % 10).astype(np.int64)}


def _net(kind):
    import zoo

    tasks = {"mnist": 10, "shifted": 10}
    if kind == "allconv":  # paper 000's default net with a head per task: 108,660 parameters
        return zoo.build("allconv", tasks=tasks, form="heads")
    return zoo.build("hard_sharing", tasks=tasks, input_shape=(28, 28, 1))


# === Figures ==================================================================================
def trainer_vs_fit(kind, images, rounds, batch=100):
    """One epoch of the Trainer against one of Keras `compile`/`fit`, same model, data,
    batch and optimiser (Adam), interleaved. Returns (ratio fit/trainer seconds, detail)."""
    import keras

    from training import Trainer

    x, y = _mnist(images)
    keras.utils.set_random_seed(0)
    fit_model = _net(kind)
    fit_model.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss={t: keras.losses.SparseCategoricalCrossentropy(from_logits=True) for t in y})
    keras.utils.set_random_seed(0)
    trainer = Trainer(_net(kind), optimizer=keras.optimizers.Adam(1e-3))
    times = interleaved({
        "fit": lambda: fit_model.fit(x, y, batch_size=batch, epochs=1, shuffle=True, verbose=0),
        "trainer": lambda: trainer.fit(x, y, epochs=1, batch_size=batch, verbose=0),
    }, rounds)
    result = ratio(times["fit"], times["trainer"])
    detail = {"images": images, "batch": batch, "params": trainer.model.count_params(),
              "fit_images_per_s": images / float(np.median(times["fit"])),
              "trainer_images_per_s": images / float(np.median(times["trainer"])), "ratio": result}
    return result["median"], detail


def epoch_vs_steady(images, rounds, batch=100):
    """Whole-epoch throughput of the Trainer (its dataset, the epoch's first and last
    steps, the end-of-epoch work) against the steady state: the same steps timed between
    the tenth step and the tenth from the end. Returns (ratio, detail)."""
    import keras

    from training import Trainer

    x, y = _mnist(images)
    keras.utils.set_random_seed(0)
    trainer = Trainer(_net("allconv"), optimizer=keras.optimizers.Adam(1e-3))
    steps = -(-images // batch)
    skip = max(1, min(10, steps // 4))

    class Steady(keras.callbacks.Callback):
        def on_train_batch_end(self, step, logs=None):
            if step == skip - 1:
                self.start = time.perf_counter()
            if step == steps - skip - 1:
                self.seconds = time.perf_counter() - self.start

    trainer.fit(x, y, epochs=1, batch_size=batch, verbose=0)  # trace and warm up
    whole, steady = [], []
    for _ in range(rounds):
        probe = Steady()
        start = time.perf_counter()
        trainer.fit(x, y, epochs=1, batch_size=batch, verbose=0, callbacks=[probe])
        whole.append(time.perf_counter() - start)
        steady.append(probe.seconds)
    epoch_rate = images / np.asarray(whole)
    steady_rate = (steps - 2 * skip) * batch / np.asarray(steady)
    result = ratio(epoch_rate, steady_rate)
    return result["median"], {"images": images, "batch": batch, "epoch_images_per_s": float(np.median(epoch_rate)),
                              "steady_images_per_s": float(np.median(steady_rate)), "ratio": result}


def matmul_peak(quick):
    """The best fp32 matrix-multiply rate TensorFlow reaches here (FLOP/s), over sizes."""
    import tensorflow as tf

    best = {}
    for n in ((256, 512) if quick else (512, 1024, 2048, 3072)):
        a = tf.random.normal((n, n))
        b = tf.random.normal((n, n))
        product = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)), autograph=False)
        product().numpy()
        seconds = min(_seconds(lambda: product().numpy()) for _ in range(3 if quick else 7))
        best[n] = 2 * n ** 3 / seconds
    return max(best.values()), {str(n): round(v / 1e9, 1) for n, v in best.items()}


def _seconds(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def training_flops_per_image(model):
    """Multiply-adds of the forward pass of every Conv2D and Dense layer, times 2 (FLOPs),
    times 3 for a training step (forward, and the two backward products per layer)."""
    import keras

    total = 0
    for layer in _layers(model):
        if isinstance(layer, keras.layers.Conv2D):
            total += _conv_flops(layer)
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.input.shape[-1] * layer.units
    return 3 * total


def _conv_flops(layer):
    """2 x the multiply-adds of one image's forward pass through a Conv2D layer."""
    _, h, w, out = layer.output.shape
    kh, kw = layer.kernel_size
    return 2 * h * w * out * kh * kw * layer.input.shape[-1]


def _layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers"):
            yield from _layers(layer)
        else:
            yield layer


def flops_fraction(steady_images_per_s, quick):
    """Achieved training FLOP/s of the all-conv step at its steady-state rate (measured by
    `epoch_vs_steady`) over the best measured matrix-multiply rate, with the step's profile
    (`step_profile`). Returns (fraction, detail)."""
    peak, by_size = matmul_peak(quick)
    per_image = training_flops_per_image(_net("allconv"))
    rate = steady_images_per_s * per_image
    return rate / peak, {"peak_gflops": round(peak / 1e9, 1), "peak_by_size_gflops": by_size,
                         "achieved_gflops": round(rate / 1e9, 2), "flops_per_image": per_image,
                         "profile": step_profile(steps=10 if quick else 50)}


def step_profile(steps, batch=100):
    """Where the all-conv training step's time goes, from TensorFlow's profiler: per op
    kind, the time its ops ran per step (summed over threads) and its share of that, and for the three
    convolution kinds, the FLOP/s they reach (forward, gradient of the input, gradient of
    the kernel: each 2 x the layers' multiply-adds, the first layer having no input gradient)."""
    import tempfile

    import keras
    import tensorflow as tf

    from training import Trainer

    x, y = _mnist(batch * steps)
    keras.utils.set_random_seed(0)
    model = _net("allconv")
    trainer = Trainer(model, optimizer=keras.optimizers.Adam(1e-3))
    trainer.fit(x, y, epochs=1, batch_size=batch, verbose=0)
    with tempfile.TemporaryDirectory() as folder:
        tf.profiler.experimental.start(folder)
        trainer.fit(x, y, epochs=1, batch_size=batch, verbose=0)
        tf.profiler.experimental.stop()
        try:
            from tensorflow.python.profiler.internal import _pywrap_profiler_plugin as plugin

            paths = [str(p) for p in Path(folder).rglob("*.xplane.pb")]
            data, ok = plugin.xspace_to_tools_data(paths, "framework_op_stats", {})
            table = json.loads(data)[0]
        except (ImportError, ValueError, TypeError, IndexError) as error:  # a TF without the tool
            return {"error": f"{type(error).__name__}: {error}"}
    columns = {c["id"]: i for i, c in enumerate(table["cols"])}
    seconds = {}
    for row in table["rows"]:
        kind, self_us = row["c"][columns["type"]]["v"], row["c"][columns["total_self_time"]]["v"]
        if kind == "IDLE":  # every idle thread of the process (tf.data's too): not the step's
            continue
        kind = ("conv_kernel_gradient" if "Conv2DBackpropFilter" in kind else
                "conv_input_gradient" if "Conv2DBackpropInput" in kind else
                "conv_forward" if "Conv2D" in kind else "batch_norm" if "BatchNorm" in kind else
                "other (element-wise, optimiser)")
        seconds[kind] = seconds.get(kind, 0.0) + self_us / 1e6
    total = sum(seconds.values())
    forward = [layer for layer in _layers(model) if isinstance(layer, keras.layers.Conv2D)]
    flops = {layer.name: _conv_flops(layer) * batch for layer in forward}
    kind_flops = {"conv_forward": sum(flops.values()), "conv_kernel_gradient": sum(flops.values()),
                  "conv_input_gradient": sum(flops.values()) - flops[forward[0].name]}
    return {"steps": steps, "batch": batch,
            "ms_per_step_by_kind": {k: round(1e3 * v / steps, 2) for k, v in sorted(seconds.items())},
            "share_by_kind": {k: round(v / total, 3) for k, v in sorted(seconds.items())},
            "conv_gflops": {k: round(float(f) * steps / seconds[k] / 1e9, 1)
                            for k, f in kind_flops.items() if seconds.get(k)}}


def task_grads_step(images, rounds, tasks=10, batch=64):
    """A training step that needs every task's gradient at the shared representation
    (PCGrad, representation mode: one backward through the heads gives all T, then one
    trunk backward) against a plain step (equal weights, one backward), `hard_sharing`
    with T ten-way heads, interleaved epochs. Returns (ratio, detail)."""
    import keras

    import zoo
    from training import Trainer

    x, labels = _mnist(images)
    names = [f"t{i}" for i in range(tasks)]
    y = {n: (labels["mnist"] + i) % 10 for i, n in enumerate(names)}
    trainers = {}
    for method in ("equal", "pcgrad"):
        keras.utils.set_random_seed(0)
        model = zoo.build("hard_sharing", tasks={n: 10 for n in names}, input_shape=(28, 28, 1))
        trainers[method] = Trainer(model, weighting=method, optimizer=keras.optimizers.Adam(1e-3))
    times = interleaved({m: (lambda t=t: t.fit(x, y, epochs=1, batch_size=batch, verbose=0))
                         for m, t in trainers.items()}, rounds)
    result = ratio(times["pcgrad"], times["equal"])
    return result["median"], {"tasks": tasks, "images": images, "batch": batch, "ratio": result}


def last_layer_task_grads(rounds, tasks=10, batch=64):
    """Every task's gradient of the last shared Dense layer's weights (one backward through
    the heads, then one einsum with the layer's input) against one backward pass of the
    summed loss to every weight; `benchmarks.gradient_taps`'s compiled functions."""
    from benchmarks.gradient_taps import measure

    row = measure(tasks, batch, max(rounds * 5, 5))
    return row["(b) last shared layer"], {"tasks": tasks, "batch": batch,
                                           "one_backward_seconds": row["one backward (s)"], "row": row}


def data_vs_train(images, rounds, batch=100):
    """Examples per second the input paths deliver, against what training consumes: the
    slower of `mtl_tf.data.load` (MNIST train, shuffled, normalised, batched, prefetched)
    and the Trainer's own dataset of in-memory arrays, over the all-conv net's training
    rate (whole epochs of the Trainer). Returns (ratio, detail)."""
    import keras

    from mtl_tf.data import load
    from training import Trainer
    from training.data import epoch_dataset

    x, y = _mnist(images)
    steps = -(-images // batch)

    def drain(dataset):
        for _ in dataset.take(steps):
            pass

    loader = load("mnist", "train", batch_size=batch, shuffle=True)
    trainer_data, _ = epoch_dataset(x, y, batch)
    keras.utils.set_random_seed(0)
    trainer = Trainer(_net("allconv"), optimizer=keras.optimizers.Adam(1e-3))
    times = interleaved({"load": lambda: drain(loader), "trainer_dataset": lambda: drain(trainer_data),
                         "training": lambda: trainer.fit(x, y, epochs=1, batch_size=batch, verbose=0)}, rounds)
    rates = {k: steps * batch / np.asarray(v) for k, v in times.items()}
    slower = np.minimum(rates["load"], rates["trainer_dataset"])
    result = ratio(slower, rates["training"])
    return result["median"], {"images": images, "batch": batch, "ratio": result,
                              **{f"{k}_examples_per_s": float(np.median(v)) for k, v in rates.items()}}


_SERVE = """
import json, sys, time
import numpy as np, tensorflow as tf
path, calls = sys.argv[1], int(sys.argv[2])
serve = tf.saved_model.load(path).signatures["serving_default"]
result = {}
for batch in (1, 256):
    x = tf.constant(np.random.default_rng(0).random((batch, 28, 28, 1), dtype=np.float32))
    for _ in range(5):
        serve(inputs=x)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        {k: v.numpy() for k, v in serve(inputs=x).items()}
        times.append(time.perf_counter() - start)
    result[batch] = float(np.median(times))
print(json.dumps(result))
"""


def serving(rounds, quick):
    """The exported SavedModel's batch-1 latency, loaded in a process that never imported
    this project (`tf.saved_model.load`, `serving_default`), against calling the Keras
    model in memory (`model(x, training=False)`), the all-conv net; alternated over rounds.
    Also the batch-256 throughput of both. Returns (latency ratio, detail)."""
    import subprocess
    import tempfile

    import keras

    import mtl_tf.export

    keras.utils.set_random_seed(0)
    model = _net("allconv")
    calls = 20 if quick else 200
    keras_times = {1: [], 256: []}
    served = {1: [], 256: []}
    with tempfile.TemporaryDirectory() as folder:
        path = mtl_tf.export.save(model, Path(folder) / "allconv")
        for _ in range(rounds):
            for batch in (1, 256):
                x = np.random.default_rng(0).random((batch, 28, 28, 1), dtype=np.float32)
                for _ in range(5):
                    model(x, training=False)
                times = []
                for _ in range(calls):
                    start = time.perf_counter()
                    {k: np.asarray(v) for k, v in model(x, training=False).items()}
                    times.append(time.perf_counter() - start)
                keras_times[batch].append(float(np.median(times)))
            out = subprocess.run([sys.executable, "-c", _SERVE, str(path), str(calls)], capture_output=True,
                                 text=True, check=True, cwd=folder)
            for batch, seconds in json.loads(out.stdout.strip().splitlines()[-1]).items():
                served[int(batch)].append(seconds)
    result = ratio(served[1], keras_times[1])
    return result["median"], {
        "ratio": result, "calls": calls,
        "saved_model_batch1_ms": 1e3 * float(np.median(served[1])),
        "keras_batch1_ms": 1e3 * float(np.median(keras_times[1])),
        "saved_model_batch256_images_per_s": 256 / float(np.median(served[256])),
        "keras_batch256_images_per_s": 256 / float(np.median(keras_times[256]))}


ROOT = HERE.parent
BENCH_VENV = ROOT / ".venv-bench"


def bench_python():
    """The benchmark environment's Python (PyTorch installed), or None."""
    import os

    given = os.environ.get("MTL_TF_BENCH_PYTHON")
    path = Path(given) if given else BENCH_VENV / "bin" / "python"
    return path if path.exists() else None


def _run_json(command):
    import subprocess

    out = subprocess.run([str(c) for c in command], capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _status_mb(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return None


def peak_rss_mb():
    """This process's peak resident memory (VmHWM; `getrusage`'s maxrss would include the
    parent's, which Linux carries across exec)."""
    return _status_mb("VmHWM")


def rss_probe(path, epochs, batch):
    """In a fresh process: the Trainer on the all-conv net, a warm-up epoch and `epochs`
    timed ones on the arrays of `path`; prints the seconds and the peak RSS (MB)."""
    import keras

    from training import Trainer

    data = np.load(path)
    x, y = data["x"], {k: data[k] for k in ("mnist", "shifted")}
    keras.utils.set_random_seed(0)
    trainer = Trainer(_net("allconv"), optimizer=keras.optimizers.Adam(1e-3))
    ready_rss = _status_mb("VmRSS")  # imported, data and net in memory, nothing trained yet
    seconds = timed_epochs(trainer, x, y, epochs, batch)
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "ready_rss_mb": ready_rss}))


def timed_epochs(trainer, x, y, epochs, batch):
    """A warm-up epoch of `trainer`, then the seconds of each of `epochs` more, all in one
    `fit` call as a user trains (the time from one epoch's end to the next's). Timing a
    `fit` call per epoch would add its set-up to every epoch (the dataset's functions
    traced, its iterator made: about 70 ms here, from `fit` of 5 steps against 100; 1% of
    an epoch of 10,000 images), where the PyTorch peer's epoch is its loop alone."""
    import keras

    ends = []
    clock = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: ends.append(time.perf_counter()))
    trainer.fit(x, y, epochs=1 + epochs, batch_size=batch, verbose=0, callbacks=[clock])
    return [b - a for a, b in zip(ends, ends[1:])]


@contextlib.contextmanager
def mnist_npz(images):
    """A temporary `.npz` file of `images` MNIST images and their two tasks' labels (`_mnist`),
    for the benchmarks' fresh processes."""
    import tempfile

    x, y = _mnist(images)
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "data.npz"
        np.savez(data, x=x, **y)
        yield data


def write_result(name, result, render, folder=HERE):
    """`folder/NAME.json` (`result`) and `folder/NAME.md` (`render(result)`; `folder` is
    `benchmarks/` unless given), each written whole or not at all; prints the Markdown."""
    from mtl_tf.data.paths import atomic_write_bytes

    text = render(result)
    Path(folder).mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(folder) / f"{name}.json", (json.dumps(result, indent=2) + "\n").encode())
    atomic_write_bytes(Path(folder) / f"{name}.md", text.encode())
    print(text)


def variant_rounds(command, names, images, rounds, base, log=print):
    """Each variant of `names` in a fresh process per round, the rounds rotating the order;
    `command(name, data)` is its command line on the `.npz` file `data` of `images` MNIST
    images, and prints a JSON line with each timed epoch's `seconds` and `peak_rss_mb`.
    Returns (the runs {name: [JSON per round]}, the rows {name: images per second (the
    median over rounds of each process's median epoch), its min and max, `vs_base` (the
    median of the per-round ratios to `base`), the median peak RSS})."""
    runs = {n: [] for n in names}
    with mnist_npz(images) as data:
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                runs[name].append(_run_json(command(name, data)))
                log(f"round {r + 1}/{rounds} {name}: {images / np.median(runs[name][-1]['seconds']):.0f} images/s")
    rate = {n: np.array([images / float(np.median(v["seconds"])) for v in runs[n]]) for n in names}
    return runs, {n: {"images_per_s": float(np.median(rate[n])), "min": float(rate[n].min()),
                      "max": float(rate[n].max()), "vs_base": float(np.median(rate[n] / rate[base])),
                      "peak_rss_mb": float(np.median([v["peak_rss_mb"] for v in runs[n]]))} for n in names}


def against_torch(images, rounds, batch=100, epochs=3):
    """The Trainer against PyTorch on the CPU (`benchmarks/torch_allconv.py`, NCHW and
    channels-last, the faster counting; fed and stepped as `benchmarks.torch_peer` found
    fastest: batches sliced in order off a once-per-epoch shuffled copy, the fused Adam
    kernel), the all-conv net, same data, batch and optimiser;
    each contender in its own fresh process per round (a warm-up epoch, then `epochs` timed,
    their median counting), rounds alternating the order. Returns ((speed ratio, RSS
    ratio), detail); the detail splits each side's peak memory into what the process holds
    before its first step (the library, the data, the net) and what training adds."""
    python = bench_python()
    if python is None:
        raise RuntimeError(f"PyTorch is not installed: `make bench` installs it into {BENCH_VENV} "
                           f"(requirements-bench.txt), or set MTL_TF_BENCH_PYTHON")
    script = HERE / "torch_allconv.py"
    commands = {"trainer": lambda data: [sys.executable, "-m", "benchmarks.record", "--rss-probe", data, epochs, batch],
                "torch_nchw": lambda data: [python, script, data, epochs, batch],
                "torch_channels_last": lambda data: [python, script, data, epochs, batch, "--channels-last"]}
    runs, _ = variant_rounds(lambda name, data: commands[name](data), list(commands), images, rounds, "trainer",
                             log=lambda message: None)
    seconds = {k: [float(np.median(v["seconds"])) for v in rs] for k, rs in runs.items()}
    best = "torch_nchw" if np.median(seconds["torch_nchw"]) <= np.median(seconds["torch_channels_last"]) \
        else "torch_channels_last"
    speed = ratio(seconds[best], seconds["trainer"])
    rss = {k: float(np.median([v["peak_rss_mb"] for v in rs])) for k, rs in runs.items()}
    ready = {k: float(np.median([v["ready_rss_mb"] for v in rs])) for k, rs in runs.items()}
    return (speed["median"], rss["trainer"] / rss[best]), {
        "ratio": speed, "images": images, "batch": batch, "timed_epochs_per_process": epochs,
        "torch_layout": best.split("_", 1)[1],
        **{f"{k}_ready_rss_mb": v for k, v in ready.items()},
        "training_rss_increment_ratio": (rss["trainer"] - ready["trainer"]) / (rss[best] - ready[best]),
        "torch_version": runs[best][0]["torch"], "torch_threads": runs[best][0]["threads"],
        "torch_feed": runs[best][0]["feed"], "torch_adam": runs[best][0]["adam"],
        **{f"{k}_images_per_s": images / float(np.median(v)) for k, v in seconds.items()},
        **{f"{k}_peak_rss_mb": v for k, v in rss.items()}}


def selective_sharing_overhead(images, rounds):
    from benchmarks.selective_sharing import measure

    median, pct, times = measure(images, rounds)
    return pct, {"images": images, "median_seconds": median}


def scaling(quick, out):
    """Step time of `hard_sharing` (conv trunk, ten-way heads) as the number of tasks T and
    the batch grow, with equal weights and with PCGrad (every task's representation
    gradient); a table (ms per step) and `scaling.png`."""
    import keras

    import zoo
    from training import Trainer

    tasks, batches = ((2, 10), (32, 128)) if quick else ((2, 10, 25, 50), (32, 128, 512))
    x, labels = _mnist(512 if quick else 4096)
    rows = []
    for method in ("equal", "pcgrad"):
        for t in tasks:
            names = [f"t{i}" for i in range(t)]
            y = {n: (labels["mnist"] + i) % 10 for i, n in enumerate(names)}
            keras.utils.set_random_seed(0)
            trainer = Trainer(zoo.build("hard_sharing", tasks={n: 10 for n in names}, input_shape=(28, 28, 1)),
                              weighting=method, optimizer=keras.optimizers.Adam(1e-3))
            for batch in batches:
                trainer.fit(x, y, epochs=1, batch_size=batch, verbose=0)  # trace for this batch
                seconds = min(_seconds(lambda: trainer.fit(x, y, epochs=1, batch_size=batch, verbose=0))
                              for _ in range(1 if quick else 2))
                rows.append({"weighting": method, "tasks": t, "batch": batch,
                             "ms_per_step": round(1e3 * seconds / -(-len(x) // batch), 3)})
    _plot_scaling(rows, Path(out) / "scaling.png")
    return rows


def _plot_scaling(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mtl_tf.data.paths import atomic_path

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, method in zip(axes, ("equal", "pcgrad")):
        for batch in sorted({r["batch"] for r in rows}):
            points = [(r["tasks"], r["ms_per_step"]) for r in rows if r["weighting"] == method and r["batch"] == batch]
            ax.plot(*zip(*points), marker="o", label=f"batch {batch}")
        ax.set_title(f"hard_sharing, {method}")
        ax.set_xlabel("tasks T")
        ax.set_yscale("log")
    axes[0].set_ylabel("ms per training step")
    axes[0].legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)


# === The record ===============================================================================
def cpu_flags():
    """The CPU's vector and matrix instruction sets (what oneDNN and PyTorch dispatch on)."""
    from mtl_tf.layers import cpu_flags as flags

    return sorted(f for f in flags() if f.startswith(("avx", "amx", "fma", "sse4")))


def onednn():
    """oneDNN's version and the instruction set it runs here, as TensorFlow's oneDNN says
    on its first convolution (ONEDNN_VERBOSE=1, in a fresh process)."""
    import os
    import subprocess

    code = ("import tensorflow as tf; tf.nn.conv2d(tf.ones([1, 4, 4, 2]), tf.ones([3, 3, 2, 2]), 1, 'SAME')")
    env = {**os.environ, "ONEDNN_VERBOSE": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    info = {}
    for line in (out.stdout + out.stderr).splitlines():
        if ",info,oneDNN v" in line:
            info["version"] = line.split("oneDNN ", 1)[1].split()[0]
        elif ",info,cpu,isa:" in line:
            info["isa"] = line.split("isa:", 1)[1].strip()
    return info


def machine():
    from training.reproduce.common import device, versions

    return {"device": device(), "platform": platform.platform(), "versions": versions(),
            "cpu_flags": cpu_flags(), "onednn": onednn(),
            "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M")}


def measure_all(quick=False, log=print, rounds=None, only=None):
    """Every figure this module can measure here, or those named in `only`: (metrics,
    details, missing)."""
    size = {"images": 1000 if quick else 10000, "rounds": rounds or (2 if quick else 3)}
    metrics, details, missing = dict.fromkeys(GOALS), {}, {}
    jobs = {
        "train_vs_fit_ratio": lambda: trainer_vs_fit("allconv", size["images"], size["rounds"]),
        "train_vs_fit_ratio_hard_sharing": lambda: trainer_vs_fit("hard_sharing", size["images"], size["rounds"]),
        "epoch_vs_steady_ratio": lambda: epoch_vs_steady(size["images"], size["rounds"]),
        # The steady rate `epoch_vs_steady_ratio` measured just before (GOALS' order).
        "train_flops_fraction_of_peak": lambda: flops_fraction(
            details["epoch_vs_steady_ratio"]["steady_images_per_s"], quick),
        "selective_sharing_overhead_pct": lambda: selective_sharing_overhead(size["images"], size["rounds"]),
        "task_grads_T10_rep_ratio": lambda: task_grads_step(size["images"], size["rounds"]),
        "data_vs_train_ratio": lambda: data_vs_train(size["images"], size["rounds"]),
        "serving_latency_ratio": lambda: serving(size["rounds"], quick),
        "task_grads_T10_shared_weights_ratio": lambda: last_layer_task_grads(size["rounds"]),
    }
    for key in GOALS:
        if key not in jobs or only and key not in only:
            continue
        start = time.time()
        log(f"{key} ...")
        metrics[key], details[key] = jobs[key]()
        log(f"{key}: {metrics[key]:.3f} ({time.time() - start:.0f} s)")
    if only and not {"train_vs_torch_ratio", "train_rss_vs_torch_ratio"} & set(only):
        return metrics, details, missing
    log("train_vs_torch_ratio, train_rss_vs_torch_ratio ...")
    try:
        (speed, rss), detail = against_torch(size["images"], size["rounds"], epochs=1 if quick else 3)
        metrics["train_vs_torch_ratio"], metrics["train_rss_vs_torch_ratio"] = speed, rss
        details["train_vs_torch_ratio"] = detail
        details["train_rss_vs_torch_ratio"] = {k: v for k, v in detail.items() if "rss" in k}
        log(f"train_vs_torch_ratio: {speed:.3f}, train_rss_vs_torch_ratio: {rss:.3f}")
    except RuntimeError as error:
        for key in ("train_vs_torch_ratio", "train_rss_vs_torch_ratio"):
            missing[key] = str(error)
        log(f"skipped: {error}")
    return metrics, details, missing


def write(metrics, details, missing, quick, out=HERE, scaling_rows=None):
    from mtl_tf.data.paths import atomic_write_bytes

    Path(out).mkdir(parents=True, exist_ok=True)
    record = {"machine": machine(), "quick": quick, "metrics": metrics, "goals": GOALS,
              "details": details, "missing": missing, "scaling": scaling_rows or []}
    atomic_write_bytes(Path(out) / "results.json", (json.dumps(record, indent=2, default=float) + "\n").encode())
    lines = ["# Speed record", "",
             f"{record['machine']['date']}, {record['machine']['device']}; " + ", ".join(
                 f"{k} {v}" for k, v in record["machine"]["versions"].items())
             + (" (**--quick**: shrunk measurements, not the record)" if quick else ""), "",
             f"CPU: {' '.join(record['machine']['cpu_flags']) or 'flags unknown'}; oneDNN "
             f"{record['machine']['onednn'].get('version', '?')} runs {record['machine']['onednn'].get('isa', '?')}.", "",
             "| figure | value | goal | met | spread (per-round ratios) |", "|---|---|---|---|---|"]
    for key, (goal, kind) in GOALS.items():
        value = metrics.get(key)
        spread = details.get(key, {}).get("ratio")
        shown = "-" if value is None else f"{value:.3f}"
        met = "-" if value is None else ("yes" if (value >= goal if kind == "min" else value <= goal) else "no")
        lines.append(f"| `{key}` | {shown} | {'>=' if kind == 'min' else '<='} {goal:g} | {met} | "
                     + (f"{spread['min']:.3f} to {spread['max']:.3f} over {spread['rounds']}" if spread else
                        missing.get(key, "")) + " |")
    lines += _causes(details)
    if scaling_rows:
        batches = sorted({r["batch"] for r in scaling_rows})
        lines += ["", "Step time (ms) of `hard_sharing` as the tasks T and the batch grow:", "",
                  "| weighting | T | " + " | ".join(f"batch {b}" for b in batches) + " |",
                  "|---|---|" + "---|" * len(batches)]
        for method in ("equal", "pcgrad"):
            for t in sorted({r["tasks"] for r in scaling_rows}):
                cells = {r["batch"]: r["ms_per_step"] for r in scaling_rows
                         if r["weighting"] == method and r["tasks"] == t}
                lines.append(f"| {method} | {t} | " + " | ".join(f"{cells[b]:.2f}" for b in batches) + " |")
        lines += ["", "![Step time against T and batch](scaling.png)"]
    atomic_write_bytes(Path(out) / "results.md", ("\n".join(lines) + "\n").encode())
    return record


def _causes(details):
    """The measured reasons behind the FLOP/s and memory figures, as lines of results.md."""
    lines = []
    profile = details.get("train_flops_fraction_of_peak", {}).get("profile", {})
    if "share_by_kind" in profile:
        peak = details["train_flops_fraction_of_peak"]["peak_gflops"]
        lines += ["", f"Where the all-conv training step's time goes (TensorFlow profiler, {profile['steps']} "
                  f"steps of batch {profile['batch']}; op time summed over threads):", "",
                  "| op kind | ms per step | share | GFLOP/s | of the matmul peak |", "|---|---|---|---|---|"]
        for kind, share in profile["share_by_kind"].items():
            rate = profile["conv_gflops"].get(kind)
            lines.append(f"| {kind} | {profile['ms_per_step_by_kind'][kind]:.2f} | {100 * share:.1f}% | "
                         + (f"{rate:.1f} | {rate / peak:.2f}" if rate else "- | -") + " |")
    torch = details.get("train_vs_torch_ratio", {})
    if "torch_feed" in torch:
        lines += ["", f"The PyTorch peer (`benchmarks/torch_allconv.py`, torch {torch['torch_version']}, "
                  f"{torch['torch_threads']} threads): batches "
                  + ("sliced in order off a copy of the data shuffled once per epoch" if torch["torch_feed"] == "permuted"
                     else "gathered with the epoch's shuffled indices")
                  + f", {torch['torch_adam']} Adam, the faster of its two layouts ({torch['torch_layout']}); "
                  f"images/s: the Trainer {torch['trainer_images_per_s']:.0f}, PyTorch NCHW "
                  f"{torch['torch_nchw_images_per_s']:.0f}, channels-last {torch['torch_channels_last_images_per_s']:.0f}. "
                  "What its speed depends on: `benchmarks/torch_peer.md`."]
    rss = details.get("train_rss_vs_torch_ratio", {})
    if "trainer_ready_rss_mb" in rss:
        layout = details["train_vs_torch_ratio"]["torch_layout"]
        torch_key = f"torch_{layout}"
        lines += ["", f"Peak memory split (MB; median over rounds): the Trainer's process holds "
                  f"{rss['trainer_ready_rss_mb']:.0f} before its first step (TensorFlow, Keras and what "
                  f"they import, the data, the net) and peaks at {rss['trainer_peak_rss_mb']:.0f}; "
                  f"PyTorch's ({layout}) {rss[torch_key + '_ready_rss_mb']:.0f} and "
                  f"{rss[torch_key + '_peak_rss_mb']:.0f}. What training adds, ours over PyTorch's: "
                  f"{rss['training_rss_increment_ratio']:.2f}."]
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="seconds per figure; not the record")
    parser.add_argument("--out", default=str(HERE), help="folder for results.json and results.md")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per comparison (default 3; --quick 2)")
    parser.add_argument("--only", default=None, help="comma-separated figures to measure (a change's "
                        "before and after; not the record, so --out defaults to runs/bench-only)")
    parser.add_argument("--rss-probe", nargs=3, metavar=("DATA", "EPOCHS", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_probe:
        path, epochs, batch = args.rss_probe
        rss_probe(path, int(epochs), int(batch))
        return {"probe": True}
    if args.rounds is not None and args.rounds < 1:
        parser.error(f"--rounds must be a positive integer. Received: --rounds={args.rounds}")
    only = args.only and args.only.split(",")
    unknown = sorted(set(only or ()) - set(GOALS))
    if unknown:
        parser.error(f"--only names figures the record does not have: {unknown}. Known: {sorted(GOALS)}")
    if only and args.out == str(HERE):
        args.out = str(ROOT / "runs" / "bench-only")
    metrics, details, missing = measure_all(args.quick, log=lambda m: print(m, flush=True), rounds=args.rounds,
                                            only=only)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    rows = []
    if not only:
        print("scaling with T and batch ...", flush=True)
        rows = scaling(args.quick, args.out)
    record = write(metrics, details, missing, args.quick, args.out, rows)
    print((Path(args.out) / "results.md").read_text())
    return record


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
