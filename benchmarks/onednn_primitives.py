"""The oneDNN primitives each side of the PyTorch comparison runs, and how long each takes
(`ONEDNN_VERBOSE=1`): the Trainer with TensorFlow's default inter-op threads, with one, and
with one thread in all; the PyTorch peer (channels-last) with its threads and with one (one
thread on each side compares the kernels without their threading runtimes); the all-conv
net at batch 100, the second of two epochs on 2,000 MNIST images (the first warms up).

    python -m benchmarks.onednn_primitives

Writes `benchmarks/onednn_primitives.md` and `.json`: per primitive (kind, implementation,
shape) the milliseconds per call on each side, and each side's total oneDNN time per step.
"""

import collections
import os
import subprocess
import sys

from benchmarks.record import HERE, ROOT, bench_python, machine, mnist_npz, write_result

IMAGES, BATCH = 2000, 100
TRAINER = """
import sys, numpy as np, keras
{threads}
from training import Trainer
from benchmarks.record import _net
data = np.load(sys.argv[1])
keras.utils.set_random_seed(0)
Trainer(_net("allconv"), optimizer=keras.optimizers.Adam(1e-3)).fit(
    data["x"], {{k: data[k] for k in ("mnist", "shifted")}}, epochs=2, batch_size={batch}, verbose=0)
"""


def primitives(output, steps):
    """{(kind, implementation, shape): [calls, ms]} of the second half of the executions."""
    rows = [line.strip().split(",") for line in output.splitlines() if line.startswith("onednn_verbose,v1,primitive,exec")]
    totals = collections.defaultdict(lambda: [0, 0.0])
    for row in rows[len(rows) // 2:]:
        key = (row[5], row[6], row[-2])
        totals[key][0] += 1
        totals[key][1] += float(row[-1])
    return {" | ".join(k): {"calls_per_step": v[0] / steps, "ms_per_call": v[1] / v[0]} for k, v in totals.items()}


def measure():
    env = {**os.environ, "ONEDNN_VERBOSE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    steps = IMAGES // BATCH
    with mnist_npz(IMAGES) as data:
        commands = {
            "trainer": [sys.executable, "-c", TRAINER.format(threads="", batch=BATCH), data],
            "trainer, 1 inter-op thread": [sys.executable, "-c", TRAINER.format(
                threads="import tensorflow as tf; tf.config.threading.set_inter_op_parallelism_threads(1)",
                batch=BATCH), data],
            # One thread on each side: the kernels' own speed, without either threading runtime.
            "trainer, 1 thread": [sys.executable, "-c", TRAINER.format(
                threads="import tensorflow as tf; tf.config.threading.set_inter_op_parallelism_threads(1); "
                        "tf.config.threading.set_intra_op_parallelism_threads(1)", batch=BATCH), data]}
        python = bench_python()
        if python is not None:
            commands["pytorch"] = [python, HERE / "torch_allconv.py", data, 1, BATCH, "--channels-last"]
            commands["pytorch, 1 thread"] = commands["pytorch"] + ["--threads", 1]
        sides, runtimes = {}, {}
        for name, command in commands.items():
            out = subprocess.run([str(c) for c in command], capture_output=True, text=True, check=True, cwd=ROOT,
                                 env=env)
            sides[name] = primitives(out.stdout, steps)
            runtimes[name] = runtime(out.stdout)
    return {"machine": machine(), "images": IMAGES, "batch": BATCH, "sides": sides, "runtimes": runtimes}


def runtime(output):
    """The oneDNN a side runs: its version and threading runtime, from the verbose header."""
    info = [line.split(",", 3)[3] for line in output.splitlines() if line.startswith("onednn_verbose,v1,info,")]
    version = next((i.split()[1] for i in info if i.startswith("oneDNN v")), "?")
    threads = next((i.split(",", 1)[1] for i in info if i.startswith("cpu,runtime:")), "?")
    return f"{version}, {threads}"


def render(result):
    sides = result["sides"]
    names = list(sides)
    keys = sorted({k for s in sides.values() for k in s},
                  key=lambda k: -max(s.get(k, {}).get("ms_per_call", 0) * s.get(k, {}).get("calls_per_step", 0)
                                     for s in sides.values()))
    m = result["machine"]
    lines = ["# oneDNN's primitives on each side", "",
             f"{m['date']}, {m['device']}; oneDNN {m['onednn'].get('version', '?')}. The all-conv net, batch "
             f"{result['batch']}, the second of two epochs on {result['images']:,} MNIST images; `ONEDNN_VERBOSE=1`.",
             "", "oneDNN on each side (version, threading runtime): " + "; ".join(
                 f"{n}: {r}" for n, r in result.get("runtimes", {}).items()) + ".", "",
             "| primitive | implementation | shape | " + " | ".join(f"{n}: ms per call (calls per step)" for n in names)
             + " |", "|---|---|---|" + "---|" * len(names)]
    for key in keys[:24]:
        cells = [f"{sides[n][key]['ms_per_call']:.3f} ({sides[n][key]['calls_per_step']:g})" if key in sides[n] else "-"
                 for n in names]
        lines.append("| " + " | ".join(key.split(" | ")) + " | " + " | ".join(cells) + " |")
    lines += ["", "oneDNN time per step (ms): " + ", ".join(
        f"{n} {sum(v['ms_per_call'] * v['calls_per_step'] for v in sides[n].values()):.1f}" for n in names)
        + ". PyTorch's batch norm and element-wise ops are its own (ATen), not oneDNN's, so they are not in its "
        "column; TensorFlow's batch norm is oneDNN's.", ""]
    return "\n".join(lines)


def main():
    write_result("onednn_primitives", measure(), render)


if __name__ == "__main__":
    main()
