"""One SGD step and a short Adam run of each weighting strategy under a mixed-precision
policy and under float32, from the same initial weights (the mixed-precision tests compare
them); with `overflow`, a run whose loss scale starts far too high.

    python -m tests.training.mixed_precision_script OUT.npz POLICY WEIGHTINGS_JSON [overflow]
"""

import json
import sys


def main(out, policy, weightings, overflow=""):
    import keras
    import numpy as np

    import zoo
    from training import Trainer

    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype("float32")
    y = {"a": (x[:, 0] > 0).astype("int64"), "b": np.where(rng.random(256) < 0.2, -1, (x[:, 1] > 0).astype("int64"))}

    def model():
        keras.utils.set_random_seed(0)
        return zoo.build("hard_sharing", tasks={"a": 2, "b": 2}, input_shape=(8,), trunk="dense", units=(16, 8))

    def optimizer(inner, scale=None):
        if keras.mixed_precision.global_policy().name != "mixed_float16":
            return inner
        return keras.optimizers.LossScaleOptimizer(inner, **({"initial_scale": scale} if scale else {}))

    results = {}
    for name in json.loads(weightings):
        for run_policy in ("float32", policy):
            keras.mixed_precision.set_global_policy(run_policy)
            m = model()
            before = [v.numpy().copy() for v in m.trainable_variables]
            Trainer(m, weighting=name, optimizer=optimizer(keras.optimizers.SGD(1.0)), shuffle=False).fit(
                x[:32], {k: v[:32] for k, v in y.items()}, epochs=1, batch_size=32, verbose=0)
            results[f"{name}/{run_policy}/step"] = np.concatenate(
                [(b - v.numpy()).ravel() for b, v in zip(before, m.trainable_variables)])
            history = Trainer(model(), weighting=name, optimizer=optimizer(keras.optimizers.Adam(1e-2))).fit(
                x, y, epochs=3, batch_size=32, verbose=0).history
            results[f"{name}/{run_policy}/loss"] = np.array(history["loss"])
    # Keras's own fit on a MultiTaskModel (its compile wraps the optimizer in a
    # LossScaleOptimizer under mixed_float16): one SGD step of PCGrad.
    import mtl_tf

    for run_policy in ("float32", policy):
        keras.mixed_precision.set_global_policy(run_policy)
        m = mtl_tf.MultiTaskModel.from_model(model())
        m.compile(optimizer=keras.optimizers.SGD(1.0), weighting="pcgrad")
        before = [v.numpy().copy() for v in m.trainable_variables]
        history = m.fit(x[:32], {k: v[:32] for k, v in y.items()}, epochs=1, batch_size=32, shuffle=False,
                        verbose=0).history
        results[f"keras/{run_policy}/step"] = np.concatenate(
            [(b - v.numpy()).ravel() for b, v in zip(before, m.trainable_variables)])
        results[f"keras/{run_policy}/logged"] = np.array(sorted(history))
    if overflow:
        keras.mixed_precision.set_global_policy(policy)
        trainer = Trainer(model(), weighting="dwa", optimizer=optimizer(keras.optimizers.Adam(1e-2), 2.0 ** 24))
        history = trainer.fit(x, y, epochs=3, batch_size=32, verbose=0).history
        results["overflow/loss"] = np.array(history["loss"])
        results["overflow/skipped"] = np.array(history["skipped_steps"])
        results["overflow/scale"] = np.array(float(trainer.optimizer.dynamic_scale.numpy()))
        results["overflow/state_finite"] = np.array(all(np.isfinite(v.numpy()).all()
                                                        for v in trainer.weighting.variables))
    np.savez(out, **{k.replace("/", "__"): v for k, v in results.items()})


if __name__ == "__main__":
    main(*sys.argv[1:])
