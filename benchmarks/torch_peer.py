"""What the PyTorch peer's speed depends on: `benchmarks/torch_allconv.py` under each way of
feeding it, each Adam implementation, layout and thread count, every variant in a fresh
process per round, the rounds rotating the order (as `benchmarks.record` measures).

    python -m benchmarks.torch_peer [--images 10000] [--rounds 3] [--epochs 3]

Writes `benchmarks/torch_peer.json` and `.md`: images per second per variant (the median
over rounds of each process's median timed epoch) and the ratio to the old peer's
(gather, for-loop Adam). The record's peer is the fastest variant found here.
"""

import argparse

from benchmarks.record import HERE, bench_python, machine, variant_rounds, write_result

# name -> the script's options
VARIANTS = {
    "nchw gather loop": ["--feed", "gather", "--adam", "loop"],
    "channels_last gather loop": ["--channels-last", "--feed", "gather", "--adam", "loop"],
    "channels_last permuted loop": ["--channels-last", "--feed", "permuted"],
    "channels_last permuted foreach": ["--channels-last", "--feed", "permuted", "--adam", "foreach"],
    "channels_last permuted fused": ["--channels-last", "--feed", "permuted", "--adam", "fused"],
    "nchw permuted fused": ["--feed", "permuted", "--adam", "fused"],
    "channels_last permuted fused, 1 thread": ["--channels-last", "--feed", "permuted", "--adam", "fused",
                                               "--threads", "1"],
}
BASE = "nchw gather loop"


def measure(images=10_000, rounds=3, epochs=3, batch=100, variants=VARIANTS, log=print):
    python = bench_python()
    if python is None:
        raise SystemExit("PyTorch is not installed: `make bench` makes .venv-bench")
    runs, rows = variant_rounds(lambda name, data: [python, HERE / "torch_allconv.py", data, epochs, batch,
                                                    *variants[name]], list(variants), images, rounds, BASE, log)
    for name, row in rows.items():
        row.update(threads=runs[name][0]["threads"], options=variants[name], vs_old_peer=row.pop("vs_base"))
    first = runs[BASE][0]
    return {"machine": machine(), "torch": first["torch"], "cpu_capability": first["cpu_capability"],
            "images": images, "rounds": rounds, "timed_epochs_per_process": epochs, "batch": batch,
            "fastest": max(rows, key=lambda n: rows[n]["images_per_s"]), "variants": rows}


def render(result):
    m = result["machine"]
    lines = ["# The PyTorch peer: what its speed depends on", "",
             f"{m['date']}, {m['device']}; torch {result['torch']} (CPU capability {result['cpu_capability']}). "
             f"The all-conv net with two heads, {result['images']:,} MNIST images, batch {result['batch']}, "
             f"Adam 1e-3; each variant in a fresh process per round ({result['rounds']} rounds, order rotating), "
             f"a warm-up epoch and {result['timed_epochs_per_process']} timed ones.", "",
             "| variant | images/s (median) | spread | vs the old peer | peak RSS (MB) | threads |",
             "|---|---|---|---|---|---|"]
    for name, row in result["variants"].items():
        lines.append(f"| {name} | {row['images_per_s']:.0f} | {row['min']:.0f} to {row['max']:.0f} | "
                     f"{row['vs_old_peer']:.3f} | {row['peak_rss_mb']:.0f} | {row['threads']} |")
    lines += ["", f"Fastest: **{result['fastest']}**. *gather*: each batch indexed out of the data with the "
              "epoch's shuffled indices (the old peer); *permuted*: the data copied once per epoch in the shuffled "
              "order, in the net's layout, batches sliced off in order (the same batches). *loop*, *foreach*, "
              "*fused*: PyTorch's Adam implementations.", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)
    result = measure(args.images, args.rounds, args.epochs)
    write_result("torch_peer", result, render)


if __name__ == "__main__":
    main()
