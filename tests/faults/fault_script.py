"""A small training run that kills itself with SIGKILL at a chosen point, then exports.

    python -m tests.faults.fault_script RUN_DIR EXPORT_DIR OUT.npz [KIND:EPOCH:STEP]

KIND says where the kill lands (EPOCH and STEP 0-based; STEP only for `step` and `batch`):
- `batch`: as a training step is about to start;
- `step`: a timer started as the step begins fires STEP milliseconds later, inside the
  compiled step or just after it;
- `callback`: in a user callback's `on_epoch_end`, before the history row is written;
- `history`: right after the CSV history row, before the summaries and the checkpoint;
- `checkpoint`: inside the checkpoint write, after the tensors are on disk but before the
  checkpoint state names them;
- `export`: during the export, after the SavedModel is written to its temporary folder
  and before it is renamed into place.
Without a fault it trains to the end, exports, and saves every weight to OUT.npz.
"""

import os
import signal
import sys
import threading

EPOCHS, BATCH, N = 3, 32, 256


def _die():
    os.kill(os.getpid(), signal.SIGKILL)


def main(run_dir, export_dir, out, fault=""):
    import keras
    import numpy as np
    import tensorflow as tf

    import mtl_tf.export
    import zoo
    from training import Trainer

    kind, epoch, step = (fault.split(":") + ["0", "0"])[:3] if fault else ("", "0", "0")
    epoch, step = int(epoch), int(step)

    class Killer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epoch = 0

        def on_epoch_begin(self, e, logs=None):
            self.epoch = e

        def on_train_batch_begin(self, s, logs=None):
            if kind == "batch" and (self.epoch, s) == (epoch, step):
                _die()
            if kind == "step" and (self.epoch, s) == (epoch, 1):
                threading.Timer(step / 1000, _die).start()

        def on_epoch_end(self, e, logs=None):
            if kind == "callback" and e == epoch:
                _die()

    if kind == "history":
        original = keras.callbacks.CSVLogger.on_epoch_end

        def write_then_die(self, e, logs=None):
            original(self, e, logs)
            if e == epoch:
                _die()

        keras.callbacks.CSVLogger.on_epoch_end = write_then_die
    if kind == "checkpoint":
        record = tf.train.CheckpointManager._record_state

        def die_before_recording(self):
            if self._latest_checkpoint.endswith(f"-{epoch + 1}"):
                _die()
            record(self)

        tf.train.CheckpointManager._record_state = die_before_recording
    if kind == "export":
        mtl_tf.export._replace = lambda tmp, path: _die()

    keras.utils.set_random_seed(0)
    tf.config.experimental.enable_op_determinism()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, 8)).astype("float32")
    y = {"a": (x[:, 0] > 0).astype("int64"), "b": (x[:, 1] * x[:, 2] > 0).astype("int64")}
    model = zoo.build("hard_sharing", tasks={"a": 2, "b": 2}, input_shape=(8,), trunk="dense",
                      units=(32,))
    trainer = Trainer(model, weighting="dwa", run_dir=run_dir, seed=1)
    trainer.fit(x, y, epochs=EPOCHS, batch_size=BATCH, callbacks=[Killer()], verbose=0)
    mtl_tf.export.save(model, export_dir, overwrite=True)
    np.savez(out, **{f"w{i}": v.numpy() for i, v in enumerate(model.weights)},
             **{f"s{i}": v.numpy() for i, v in enumerate(trainer.weighting.variables)})


if __name__ == "__main__":
    main(*sys.argv[1:])
