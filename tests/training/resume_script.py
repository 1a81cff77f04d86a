"""Trains a small model in its own process (the kill-and-resume and distribution tests).

    python -m tests.training.resume_script RUN_DIR EPOCHS OUT.npz [mirrored]
"""

import json
import os
import sys

import numpy as np


def main(run_dir, epochs, out, layout="single"):
    if layout == "mirrored":
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import tensorflow as tf

    import zoo
    from tests.helpers import two_task_batch
    from training import Trainer

    keras.utils.set_random_seed(0)
    tf.config.experimental.enable_op_determinism()
    distribution = None
    if layout == "mirrored":
        distribution = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    elif layout == "multiworker":
        distribution = tf.distribute.MultiWorkerMirroredStrategy()
    scope = distribution.scope() if distribution else _null()
    with scope:
        # MODEL: a zoo builder's name and arguments as JSON.
        spec = json.loads(os.environ.get("MODEL", '{"name": "hard_sharing", "trunk": "dense", "units": [64]}'))
        model = zoo.build(spec.pop("name"), tasks={"mnist": 10, "fashion_mnist": 10}, input_shape=(28, 28, 1),
                          **{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()})
        # WEIGHTING: a strategy name, or its config as JSON.
        weighting = os.environ.get("WEIGHTING", "uncertainty")
        weighting = json.loads(weighting) if weighting.startswith("{") else weighting
        trainer = Trainer(model, weighting=weighting,
                          optimizer=keras.optimizers.Adam(1e-3), distribution=distribution,
                          run_dir=run_dir if run_dir != "-" else None, seed=3)
    x, y = two_task_batch(1024)
    initial = {f"initial_w{i}": v.numpy() for i, v in enumerate(model.weights)}
    trainer.fit(x, y, epochs=int(epochs), batch_size=64, verbose=0)
    weights = {f"w{i}": v.numpy() for i, v in enumerate(model.weights)}
    weights.update({f"s{i}": v.numpy() for i, v in enumerate(trainer.weighting.variables)})
    np.savez(out, **weights, **initial)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *args):
        return False


if __name__ == "__main__":
    main(*sys.argv[1:])
