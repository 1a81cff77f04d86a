"""Which memory layout TensorFlow's CPU convolutions train fastest in: the all-conv net's
trunk (3x3 convolutions 1 -> 32, 32 -> 32 stride 2, 32 -> 64, 64 -> 64 stride 2, 64 -> 64
valid, each with TensorFlow's fused batch norm and a ReLU), one training step (forward,
gradients, an SGD update) on a batch of 100 28x28 images, in NHWC (channels last, Keras's
default) and NCHW (channels first, PyTorch's default), in one process, the layouts
alternating over the rounds.

    python -m benchmarks.conv_layout [--rounds 3] [--steps 40]

Writes `benchmarks/conv_layout.json` and `.md`: ms per step (the median over rounds) and
NCHW's time over NHWC's.
"""

import argparse
import time

import numpy as np

from benchmarks.record import machine, write_result

TRUNK = [(1, 32, 1, "SAME"), (32, 32, 2, "SAME"), (32, 64, 1, "SAME"), (64, 64, 2, "SAME"), (64, 64, 1, "VALID")]
LAYOUTS = ("NHWC", "NCHW")


def step_ms(layout, steps, batch=100):
    """The mean ms per training step of the trunk in `layout`, over `steps` steps after 5 warm-up ones."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    kernels = [tf.Variable(rng.normal(0, 0.1, (3, 3, i, o)).astype("float32")) for i, o, _, _ in TRUNK]
    scales = [tf.Variable(np.ones(o, "float32")) for _, o, _, _ in TRUNK]
    offsets = [tf.Variable(np.zeros(o, "float32")) for _, o, _, _ in TRUNK]
    variables = kernels + scales + offsets
    x = rng.normal(size=(batch, 28, 28, 1)).astype("float32")
    x = tf.constant(x.transpose(0, 3, 1, 2) if layout == "NCHW" else x)
    empty = tf.constant([], tf.float32)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            h = x
            for (_, _, stride, padding), kernel, scale, offset in zip(TRUNK, kernels, scales, offsets):
                h = tf.nn.conv2d(h, kernel, stride, padding, data_format=layout)
                h = tf.raw_ops.FusedBatchNormV3(x=h, scale=scale, offset=offset, mean=empty, variance=empty,
                                                epsilon=1e-3, exponential_avg_factor=1.0, data_format=layout,
                                                is_training=True)[0]
                h = tf.nn.relu(h)
            loss = tf.reduce_mean(tf.square(h))
        for variable, gradient in zip(variables, tape.gradient(loss, variables)):
            variable.assign_sub(1e-4 * gradient)
        return loss

    for _ in range(5):
        step(x)
    start = time.perf_counter()
    for _ in range(steps):
        loss = step(x)
    loss.numpy()  # waits for the last step
    return (time.perf_counter() - start) / steps * 1000


def measure(rounds=3, steps=40):
    ms = {layout: [] for layout in LAYOUTS}
    for r in range(rounds):
        for layout in LAYOUTS[r % 2:] + LAYOUTS[:r % 2]:
            ms[layout].append(step_ms(layout, steps))
    return {"machine": machine(), "rounds": rounds, "steps": steps,
            "ms_per_step": {k: float(np.median(v)) for k, v in ms.items()}, "ms_per_round": ms,
            "nchw_over_nhwc": float(np.median(np.array(ms["NCHW"]) / np.array(ms["NHWC"])))}


def render(result):
    m = result["machine"]
    lines = ["# TensorFlow's CPU convolutions: NHWC against NCHW", "",
             f"{m['date']}, {m['device']}; tensorflow {m['versions'].get('tensorflow')}, oneDNN "
             f"{m['onednn'].get('version', '?')} ({m['onednn'].get('isa', '?')}). The all-conv net's trunk with "
             f"fused batch norm and ReLU, a training step on a batch of 100, {result['steps']} steps per round, "
             f"{result['rounds']} rounds alternating the layouts in one process.", "",
             "| layout | ms per step (median) | rounds |", "|---|---|---|"]
    for layout, ms in result["ms_per_step"].items():
        rounds = ", ".join(f"{v:.2f}" for v in result["ms_per_round"][layout])
        lines.append(f"| {layout} | {ms:.2f} | {rounds} |")
    lines += ["", f"NCHW takes {result['nchw_over_nhwc']:.2f}x NHWC's time (median of the per-round ratios).", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args(argv)
    write_result("conv_layout", measure(args.rounds, args.steps), render)


if __name__ == "__main__":
    main()
