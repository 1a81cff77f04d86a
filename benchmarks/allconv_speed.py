"""Training speed of the all-convolution net variants on this CPU (paper 000).

    python -m benchmarks.allconv_speed [--examples 10000] [--epochs 3]

Single-task MNIST, batch 100 (the paper's), Adam, through the Trainer; the first epoch
(tracing) is excluded. Prints images per second per variant, so the choice of the
default (`zoo.allconv`'s docstring) can be checked on another machine.
"""

import argparse
import time

import keras
import numpy as np

import zoo
from benchmarks.throughput import _EpochTimer
from mtl_tf.data import load_numpy
from training import Trainer

VARIANTS = {
    "default: depth 2, (32, 64), batch norm": {},
    "All-CNN-C depth 3, (32, 64), dropout 0.5": {"depth": 3, "batch_norm": False, "dropout": 0.5},
    "depth 3, (16, 32), batch norm": {"depth": 3, "filters": (16, 32)},
    "depth 2, (48, 96), batch norm": {"filters": (48, 96)},
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)
    images, labels = load_numpy("mnist", "train")
    x = images[: args.examples, ..., None].astype(np.float32) / 255.0
    y = {"mnist": labels[: args.examples]}
    for title, kwargs in VARIANTS.items():
        keras.utils.set_random_seed(0)
        model = zoo.build("allconv", tasks={"mnist": 10}, **kwargs)
        timer = _EpochTimer()
        Trainer(model, learning_rate=1e-3).fit(x, y, epochs=args.epochs, batch_size=100,
                                               callbacks=[timer], verbose=0)
        rate = args.examples / np.median(timer.times[1:])
        print(f"{title:<45} {model.count_params():>9,} params  {rate:7.0f} images/s", flush=True)


if __name__ == "__main__":
    start = time.time()
    main()
    print(f"({time.time() - start:.0f} s)")
