"""Training throughput of our Trainer beside Keras `fit()` on the same model and data.

    python -m benchmarks.throughput [--examples 20000] [--epochs 3] [--batch 128]

`hard_sharing` (conv trunk) with two ten-way heads, every example labelled for both
tasks (Keras `fit()` has no per-task label mask), Adam, equal weights. Both start from
the same initial weights; the first epoch (tracing) is excluded. Prints examples per
second for each and the ratio.
"""

import argparse
import time

import keras
import numpy as np

import zoo
from mtl_tf.data import load_numpy
from training import Trainer


class _EpochTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args(argv)
    images, labels = load_numpy("mnist", "train")
    x = images[: args.examples, ..., None].astype(np.float32) / 255.0
    y = {"digit": labels[: args.examples], "parity": labels[: args.examples] % 2}
    tasks = {"digit": 10, "parity": 2}

    keras.utils.set_random_seed(0)
    model = zoo.build("hard_sharing", tasks=tasks, input_shape=(28, 28, 1))
    initial = model.get_weights()
    timer = _EpochTimer()
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss={t: keras.losses.SparseCategoricalCrossentropy(from_logits=True) for t in tasks})
    model.fit(x, y, batch_size=args.batch, epochs=args.epochs, shuffle=True, verbose=0,
              callbacks=[timer])
    keras_rate = args.examples / np.median(timer.times[1:])

    model.set_weights(initial)
    timer = _EpochTimer()
    Trainer(model, optimizer=keras.optimizers.Adam(1e-3)).fit(
        x, y, epochs=args.epochs, batch_size=args.batch, callbacks=[timer], verbose=0)
    ours_rate = args.examples / np.median(timer.times[1:])
    print(f"Keras fit():  {keras_rate:8.0f} examples/s")
    print(f"Trainer:      {ours_rate:8.0f} examples/s")
    print(f"ratio Trainer / fit(): {ours_rate / keras_rate:.2f}")


if __name__ == "__main__":
    main()
