"""Selective Sharing's overhead per epoch: capture + decomposition + clustering, as a
percentage of the epoch's training time (issue 14's goal: at most 5%).

    python -m benchmarks.selective_sharing [--images 10000] [--rounds 3]

Model: the paper's MNIST net (ten branches, batch 64, SGD 0.02 / momentum 0.5). In each
round, in alternating order, one epoch of the MTL baseline (no capture) and one epoch with
the capture on (the step also returns every task's branch-point gradient), each in its own
Trainer after a warm-up epoch; then the captured sums are decomposed and clustered as at an
epoch's end. Prints the medians and the overhead:
(capture epoch - plain epoch + decomposition + clustering) / plain epoch.
"""

import argparse
import time

import keras
import numpy as np

import zoo
from mtl_tf.data import load_numpy
from training import Trainer
from training.selective_sharing import cluster_tasks, tt_points
from zoo.selective_sharing import DIGIT_TASKS, one_vs_all_tasks


def _epoch(trainer, x, y):
    start = time.perf_counter()
    trainer.fit(x, y, epochs=1, batch_size=64, verbose=0)
    return time.perf_counter() - start


def measure(images=10000, rounds=3):
    x, labels = load_numpy("mnist", "train50k")
    x = (x[:images] / 255.0).astype("float32")[..., None]
    y = {t: (labels[:images] == d).astype("int64") for d, t in enumerate(DIGIT_TASKS)}
    trainers = {}
    for kind in ("plain", "capture"):
        keras.utils.set_random_seed(0)
        trainers[kind] = Trainer(zoo.build("selective_sharing"), tasks=one_vs_all_tasks(),
                                 optimizer=keras.optimizers.SGD(0.02, momentum=0.5))
        if kind == "capture":
            trainers[kind].capture_branch_gradients()
        _epoch(trainers[kind], x, y)  # trace and warm up
    times = {"plain": [], "capture": [], "decomposition": [], "clustering": []}
    for r in range(rounds):
        for kind in (("plain", "capture") if r % 2 == 0 else ("capture", "plain")):
            times[kind].append(_epoch(trainers[kind], x, y))
        gradients = trainers["capture"].captured_branch_gradients()
        start = time.perf_counter()
        points = tt_points(gradients)
        times["decomposition"].append(time.perf_counter() - start)
        start = time.perf_counter()
        cluster_tasks(points, list(DIGIT_TASKS))
        times["clustering"].append(time.perf_counter() - start)
    median = {k: float(np.median(v)) for k, v in times.items()}
    overhead = (median["capture"] - median["plain"] + median["decomposition"] + median["clustering"])
    return median, 100 * overhead / median["plain"], times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    median, pct, times = measure(args.images, args.rounds)
    print(f"\nSelective Sharing overhead per epoch ({args.images} MNIST images, batch 64, "
          f"{args.rounds} rounds, medians)\n")
    print("| part | seconds per epoch | all rounds |")
    print("|---|---|---|")
    for key in ("plain", "capture", "decomposition", "clustering"):
        print(f"| {key} | {median[key]:.3f} | {', '.join(f'{t:.3f}' for t in times[key])} |")
    print(f"\nselective_sharing_overhead_pct: {pct:.2f} (goal <= 5)")


if __name__ == "__main__":
    main()
