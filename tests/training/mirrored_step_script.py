"""One gradient-level step under MirroredStrategy on two logical CPUs, SGD with rate 1
(the mirrored gradient-level test compares it with one device).

    python -m tests.training.mirrored_step_script OUT.npz WEIGHTING_JSON
"""

import json
import sys


def main(out, weighting):
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np

    from tests.training.test_step_reference import N, _data, _model
    from training import Trainer

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
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
