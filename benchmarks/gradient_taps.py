"""Cost of per-task gradients as a ratio to one backward pass.

    python -m benchmarks.gradient_taps [--tasks 2 10 50] [--batch 64] [--repeats 30]

Model: `hard_sharing` with its conv trunk (32 and 64 3x3 filters, a 128-unit shared
layer) and T ten-way heads, on MNIST batches. Each timing is a compiled function that
runs the forward pass and the gradients named; the baseline is one backward pass of the
summed loss to every weight. Prints a Markdown table.
"""

import argparse
import time

import numpy as np
import tensorflow as tf

import zoo
from mtl_tf.data import load_numpy
from mtl_tf.gradients import last_layer_gradients, representation_gradients, shared_gradients
from training import Trainer


def _time(function, repeats):
    function()  # trace and warm up
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure(num_tasks, batch, repeats):
    names = [f"t{i}" for i in range(num_tasks)]
    model = zoo.build("hard_sharing", tasks={n: 10 for n in names}, input_shape=(28, 28, 1))
    trainer = Trainer(model)
    parts = trainer.parts
    images, labels = load_numpy("mnist", "test")
    x = tf.constant(images[:batch, ..., None] / 255.0, tf.float32)
    y = {n: tf.constant((labels[:batch] + i) % 10) for i, n in enumerate(names)}
    variables = model.trainable_variables
    shared = parts.shared_variables

    def forward(tape_persistent=False):
        tape = tf.GradientTape(persistent=tape_persistent)
        with tape:
            z, h, copies, outputs, _ = parts.forward(x, training=True)
            losses = tf.unstack(trainer.step.losses(y, outputs)[0])  # inside the tape
            summed = tf.add_n(losses)
        return tape, z, h, copies, losses, summed

    @tf.function
    def one_backward():
        tape, *_, summed = forward()
        return tape.gradient(summed, variables)

    @tf.function
    def rep():
        tape, z, h, copies, losses, summed = forward(True)
        return representation_gradients(tape, summed, copies, names)

    @tf.function
    def last_layer():
        tape, z, h, copies, losses, summed = forward(True)
        return last_layer_gradients(parts.last_dense, h, representation_gradients(tape, summed, copies, names))

    @tf.function
    def all_shared():
        tape, z, h, copies, losses, summed = forward(True)
        return shared_gradients(tape, z, shared, representation_gradients(tape, summed, copies, names))

    @tf.function
    def separate_backwards():
        tape, z, h, copies, losses, summed = forward(True)
        return [tape.gradient(losses[i], shared) for i in range(num_tasks)]

    base = _time(one_backward, repeats)
    return {"one backward (s)": base,
            "(a) representation": _time(rep, repeats) / base,
            "(b) last shared layer": _time(last_layer, repeats) / base,
            "(c) all shared weights": _time(all_shared, repeats) / base,
            "T separate backwards": _time(separate_backwards, repeats) / base}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[2, 10, 50])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    rows = {t: measure(t, args.batch, args.repeats) for t in args.tasks}
    columns = list(next(iter(rows.values())))
    print("| T | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for t, row in rows.items():
        cells = [f"{row[c]:.4f}" if c.endswith("(s)") else f"{row[c]:.2f}x" for c in columns]
        print(f"| {t} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
