"""One gradient-level step with two replicas, SGD with rate 1 (the gradient-level
distribution tests compare it with one device): two logical CPUs under MirroredStrategy,
or, with `multiworker`, this process as one worker of the `TF_CONFIG` cluster under
MultiWorkerMirroredStrategy.

    python -m tests.training.mirrored_step_script OUT.npz WEIGHTING_JSON [multiworker]
"""

import json
import sys


def main(out, weighting, layout="mirrored"):
    import tensorflow as tf

    if layout == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    else:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    import keras
    import numpy as np

    from tests.training.test_step_reference import N, _data, _model
    from training import Trainer

    with strategy.scope():
        model = _model()
        trainer = Trainer(model, weighting=json.loads(weighting), optimizer=keras.optimizers.SGD(1.0),
                          distribution=strategy)
    initial = [v.numpy() for v in model.trainable_variables]
    x, y = _data()
    # One global batch, in order: the first replica reads the first half.
    trainer.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(N), epochs=1, verbose=0)
    np.savez(out, **{f"initial{i}": w for i, w in enumerate(initial)},
             **{f"final{i}": v.numpy() for i, v in enumerate(model.trainable_variables)})


if __name__ == "__main__":
    main(*sys.argv[1:])
