"""One gradient-level step with two replicas, SGD with rate 1 (the gradient-level
distribution tests compare it with one device): two logical CPUs under MirroredStrategy,
or, with `multiworker`, this process as one worker of the `TF_CONFIG` cluster under
MultiWorkerMirroredStrategy.

    python -m tests.training.mirrored_step_script OUT.npz WEIGHTING_JSON [multiworker] [TASKS]

WEIGHTING_JSON may be a list: one step of each, from the same initial weights, saved
under the prefixes `0_`, `1_`... TASKS is 2 (the default) or 3 (a third head, `c`).
"""

import json
import sys


def main(out, weighting, layout="mirrored", tasks="2"):
    import tensorflow as tf

    if layout == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    else:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    import keras
    import numpy as np

    from tests.training.test_step_reference import HEADS, N, _data, _model
    from training import Trainer

    def step(spec):
        with strategy.scope():
            model = _model(heads=HEADS[int(tasks)])
            trainer = Trainer(model, weighting=spec, optimizer=keras.optimizers.SGD(1.0),
                              distribution=strategy)
        initial = [v.numpy() for v in model.trainable_variables]
        x, y = _data(int(tasks))
        # One global batch, in order: the first replica reads the first half.
        trainer.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(N), epochs=1, verbose=0)
        return {**{f"initial{i}": w for i, w in enumerate(initial)},
                **{f"final{i}": v.numpy() for i, v in enumerate(model.trainable_variables)}}

    spec = json.loads(weighting)
    if isinstance(spec, list):
        np.savez(out, **{f"{j}_{k}": v for j, s in enumerate(spec) for k, v in step(s).items()})
    else:
        np.savez(out, **step(spec))

if __name__ == "__main__":
    main(*sys.argv[1:])
