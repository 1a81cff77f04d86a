"""What the Trainer's speed on the all-conv net depends on: its batch norm (the fused kernel
of `mtl_tf.layers.BatchNormalization` or Keras's ops), its Adam (Keras's or
`benchmarks.fused_adam.FusedAdam`), steps per compiled call and TensorFlow's inter-op
threads; each variant in a fresh process per round, the rounds rotating the order, as
`benchmarks.record` measures.

    python -m benchmarks.trainer_variants [--images 10000] [--rounds 3] [--epochs 3] [--isa AVX2]
        [--only "keras batch norm;fused batch norm"] [--out FOLDER]

Writes `benchmarks/trainer_variants.json` and `.md` (with `--isa`, oneDNN held to that
instruction set by `ONEDNN_MAX_CPU_ISA`: `trainer_variants-avx2.*`): images per second per variant (the
median over rounds of each process's median timed epoch) and the ratio to the Trainer as
it was before the fused batch norm (Keras's batch norm, Keras's Adam, one step per call).
"""

import argparse
import json
import os
import sys

import numpy as np

from benchmarks.record import machine, peak_rss_mb, timed_epochs, variant_rounds, write_result

# name -> the probe's options
VARIANTS = {
    "keras batch norm": {"batch_norm": "keras"},
    "fused batch norm": {"batch_norm": "fused"},
    "fused batch norm, FusedAdam": {"batch_norm": "fused", "adam": "fused"},
    "fused batch norm, 10 steps per call": {"batch_norm": "fused", "steps_per_execution": 10},
    "fused batch norm, 1 inter-op thread": {"batch_norm": "fused", "inter_op_threads": 1},
    "fused batch norm, 1 intra-op thread": {"batch_norm": "fused", "intra_op_threads": 1},
}
BASE = "keras batch norm"


def probe(path, epochs, batch, options):
    """In this (fresh) process: the Trainer on the all-conv net with `options`, a warm-up
    epoch and `epochs` timed ones; prints the seconds and the peak RSS (MB)."""
    import keras
    import tensorflow as tf

    import mtl_tf.layers
    from benchmarks.fused_adam import FusedAdam
    from benchmarks.record import _net
    from training import Trainer

    if "inter_op_threads" in options:  # before TensorFlow's runtime starts
        tf.config.threading.set_inter_op_parallelism_threads(options["inter_op_threads"])
    if "intra_op_threads" in options:
        tf.config.threading.set_intra_op_parallelism_threads(options["intra_op_threads"])
    if "batch_norm" in options:  # decides for every zoo layer left at `fused=None`
        kernel = options["batch_norm"] == "fused"
        mtl_tf.layers.fused_kernel_pays = lambda: kernel
    data = np.load(path)
    x, y = data["x"], {k: data[k] for k in ("mnist", "shifted")}
    keras.utils.set_random_seed(0)
    optimizer = FusedAdam(1e-3) if options.get("adam") == "fused" else keras.optimizers.Adam(1e-3)
    trainer = Trainer(_net("allconv"), optimizer=optimizer,
                      steps_per_execution=options.get("steps_per_execution", 1))
    print(json.dumps({"seconds": timed_epochs(trainer, x, y, epochs, batch), "peak_rss_mb": peak_rss_mb()}))


def measure(images=10_000, rounds=3, epochs=3, batch=100, variants=VARIANTS, log=print):
    def command(name, data):
        return [sys.executable, "-m", "benchmarks.trainer_variants", "--probe", data, epochs, batch,
                json.dumps(variants[name])]

    _, rows = variant_rounds(command, list(variants), images, rounds, BASE, log)
    for name, row in rows.items():
        row["options"] = variants[name]
    return {"machine": machine(), "images": images, "rounds": rounds, "timed_epochs_per_process": epochs,
            "batch": batch, "variants": rows}


def render(result):
    m = result["machine"]
    lines = ["# The Trainer: what its speed depends on", "",
             f"{m['date']}, {m['device']}; tensorflow {m['versions'].get('tensorflow')}, oneDNN "
             f"{m['onednn'].get('version', '?')} ({m['onednn'].get('isa', '?')}). The all-conv net "
             f"with two heads, {result['images']:,} MNIST images, batch {result['batch']}, Adam 1e-3; each variant in "
             f"a fresh process per round ({result['rounds']} rounds, order rotating), a warm-up epoch and "
             f"{result['timed_epochs_per_process']} timed ones.", "",
             f"| variant | images/s (median) | spread | vs {BASE} | peak RSS (MB) |", "|---|---|---|---|---|"]
    for name, row in result["variants"].items():
        lines.append(f"| {name} | {row['images_per_s']:.0f} | {row['min']:.0f} to {row['max']:.0f} | "
                     f"{row['vs_base']:.3f} | {row['peak_rss_mb']:.0f} |")
    lines += ["", "*keras batch norm*: Keras 3's batch norm (the moments and the normalisation as separate ops), "
              "as every zoo net trained before `mtl_tf.layers.BatchNormalization`; *fused*: TensorFlow's "
              "`FusedBatchNormV3` and its gradient kernel. Each zoo net takes the faster of the two by the "
              "machine (`mtl_tf.layers.fused_kernel_pays`).", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--isa", default=None, help="hold oneDNN to this instruction set (ONEDNN_MAX_CPU_ISA)")
    parser.add_argument("--only", default=None, help="variants separated by ';' (default: all)")
    parser.add_argument("--out", default=None, help="folder for the files (default: benchmarks/)")
    parser.add_argument("--probe", nargs=4, metavar=("DATA", "EPOCHS", "BATCH", "OPTIONS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        path, epochs, batch, options = args.probe
        return probe(path, int(epochs), int(batch), json.loads(options))
    if args.isa:
        os.environ["ONEDNN_MAX_CPU_ISA"] = args.isa  # the probes inherit it
    names = args.only.split(";") if args.only else list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or BASE not in names:
        parser.error(f"--only must name variants among {sorted(VARIANTS)}, {BASE!r} among them. "
                     f"Received: --only={args.only!r}")
    result = measure(args.images, args.rounds, args.epochs, variants={n: VARIANTS[n] for n in names})
    name = "trainer_variants" + (f"-{args.isa.lower()}" if args.isa else "")
    write_result(name, result, render, **({"folder": args.out} if args.out else {}))


if __name__ == "__main__":
    main()
