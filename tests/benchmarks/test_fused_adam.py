"""FusedAdam against Keras's Adam: the same trajectory, state and checkpoints."""

import keras
import numpy as np
import tensorflow as tf

from benchmarks.fused_adam import FusedAdam


def _trajectory(optimizer, steps=6):
    rng = np.random.default_rng(0)
    variables = [keras.Variable(rng.normal(size=shape).astype("float32")) for shape in ((3, 3, 2, 4), (4,), (7,))]
    for _ in range(steps):
        grads = [rng.normal(size=v.shape).astype("float32") * 10.0 ** rng.integers(-4, 2) for v in variables]
        optimizer.apply_gradients(zip(grads, variables))
    return variables


def test_the_same_steps_as_keras_adam():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.01, 2, 0.5)
    for kwargs in ({"learning_rate": 0.01}, {"learning_rate": schedule, "beta_1": 0.8, "epsilon": 1e-4}):
        ours, theirs = FusedAdam(**kwargs), keras.optimizers.Adam(**kwargs)
        for a, b in zip(_trajectory(ours), _trajectory(theirs)):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)  # steps of 0.01: float rounding
        # The kernel forms 1 - beta_2 from float32 beta_2 (Keras in float64): 1.3e-5 apart at 0.999.
        for a, b in zip(ours.variables, theirs.variables):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=4e-5, atol=1e-9)


def test_amsgrad_takes_keras_path_and_config_round_trips():
    ours, theirs = FusedAdam(0.01, amsgrad=True), keras.optimizers.Adam(0.01, amsgrad=True)
    for a, b in zip(_trajectory(ours), _trajectory(theirs)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    again = keras.optimizers.deserialize(keras.optimizers.serialize(FusedAdam(0.02, beta_2=0.99)))
    assert type(again) is FusedAdam and again.beta_2 == 0.99


def test_a_keras_adam_checkpoint_restores_into_fused_adam(tmp_path):
    theirs = keras.optimizers.Adam(0.01)
    variables = _trajectory(theirs, steps=3)
    tf.train.Checkpoint(optimizer=theirs).write(str(tmp_path / "ckpt"))
    ours = FusedAdam(0.01)
    ours.build(variables)
    tf.train.Checkpoint(optimizer=ours).read(str(tmp_path / "ckpt")).assert_consumed()
    for a, b in zip(ours.variables, theirs.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
