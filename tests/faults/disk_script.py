"""Checkpoints and exports onto a full disk: run inside a small tmpfs mounted at DIR.

    unshare -rm sh -c 'mount -t tmpfs -o size=4m tmpfs DIR && python -m tests.faults.disk_script DIR'

Prints one JSON line: the errors raised, the epoch a new trainer restores, and whether
the export written before the disk filled still loads and answers as the model does.
"""

import json
import os
import sys
from pathlib import Path


def _fill(folder, leave=16 * 1024):
    """Takes all but `leave` bytes of the file system holding `folder`."""
    stat = os.statvfs(folder)
    size = max(stat.f_bavail * stat.f_frsize - leave, 0)
    with open(Path(folder) / "filler", "wb") as f:
        f.write(b"\0" * size)


def main(folder):
    import keras
    import numpy as np
    import tensorflow as tf

    import mtl_tf.export
    import zoo
    from training import Trainer

    folder = Path(folder)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 64)).astype("float32")
    y = {"a": (x[:, 0] > 0).astype("int64"), "b": (x[:, 1] > 0).astype("int64")}

    def model():
        return zoo.build("hard_sharing", tasks={"a": 2, "b": 2}, input_shape=(64,), trunk="dense",
                         units=(256, 128))

    class FillDisk(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:  # after the first checkpoint
                _fill(folder)

    result = {}
    trainer = Trainer(model(), run_dir=folder / "run")
    try:
        trainer.fit(x, y, epochs=2, batch_size=32, callbacks=[FillDisk()], verbose=0)
    except RuntimeError as error:
        result["checkpoint_error"] = str(error)
    result["restored_epoch"] = Trainer(model(), run_dir=folder / "run").restore()
    result["checkpoint_files"] = sorted(p.name for p in (folder / "run" / "checkpoints").iterdir())

    (folder / "filler").unlink()
    served = trainer.model
    target = folder / "export" / "model"
    mtl_tf.export.save(served, target)
    _fill(folder)
    for layer in served.get_layer("trunk").layers:  # a different model to export over it
        for w in layer.weights:
            w.assign(w * 2.0)
    try:
        mtl_tf.export.save(served, target, overwrite=True)
    except OSError as error:
        result["export_error"] = str(error)
    for w in served.get_layer("trunk").weights:
        w.assign(w / 2.0)
    loaded = tf.saved_model.load(str(target)).signatures["serving_default"](inputs=tf.constant(x[:4]))
    expected = served(x[:4], training=False)
    result["export_intact"] = all(np.allclose(loaded[t].numpy(), expected[t], rtol=1e-5, atol=1e-6)
                                  for t in ("a", "b"))
    result["export_leftovers"] = sorted(p.name for p in target.parent.iterdir())
    print(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:])
