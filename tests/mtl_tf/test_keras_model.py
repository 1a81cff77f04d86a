"""`mtl_tf.MultiTaskModel`: Keras's own `fit` with any weighting strategy. One `fit` epoch
equals one Trainer epoch (the same step code, same seed, same batches); a callback sees
the weights; a `.keras` round trip resumes the strategy's state; a plain keras-tuner
HyperModel searches with it; bad arguments get clear errors."""

import subprocess
import sys
from pathlib import Path

import keras
import keras_tuner
import numpy as np
import pytest

import mtl_tf
import zoo
from training import Trainer

RNG = np.random.default_rng(12)
N = 96
X = RNG.normal(size=(N, 6)).astype("float32")
Y = {"a": RNG.integers(0, 3, N), "b": np.where(RNG.random(N) < 0.3, -1, RNG.integers(0, 2, N))}


def _model(name="hard_sharing"):
    keras.utils.set_random_seed(4)
    kwargs = {"trunk": "dense", "units": (8, 5)} if name == "hard_sharing" else {"expert": "dense", "experts": 3}
    return zoo.build(name, tasks={"a": 3, "b": 2}, input_shape=(6,), **kwargs)


@pytest.mark.parametrize("weighting, name", [("equal", "hard_sharing"),
                                             pytest.param("uncertainty", "hard_sharing", marks=pytest.mark.slow),
                                             ("pcgrad", "hard_sharing"), ("mgda", "mmoe")])
def test_one_fit_epoch_equals_one_trainer_epoch(weighting, name):
    """MMoE: the graph cut at its experts' outputs, in both."""
    reference = _model(name)
    trainer = Trainer(reference, weighting=weighting, optimizer=keras.optimizers.Adam(0.01), shuffle=False)
    want = trainer.fit(X, Y, epochs=2, batch_size=16, verbose=0).history
    model = mtl_tf.MultiTaskModel.from_model(_model(name))
    model.compile(optimizer=keras.optimizers.Adam(0.01), weighting=weighting)
    got = model.fit(X, Y, epochs=2, batch_size=16, shuffle=False, verbose=0).history
    for v, w in zip(model.trainable_variables, reference.trainable_variables):
        np.testing.assert_allclose(v.numpy(), w.numpy(), rtol=1e-5, atol=1e-6, err_msg=v.path)
    for w, v in zip(trainer.weighting.variables, model.weighting.variables):
        np.testing.assert_allclose(v.numpy(), w.numpy(), rtol=1e-5, atol=1e-6)
    for key in ("loss", "a_loss", "b_accuracy", "weight_a", "weight_b"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, err_msg=key)


def test_a_callback_sees_the_weights_change_and_validation_is_logged():
    seen = []
    model = mtl_tf.MultiTaskModel.from_model(_model())
    model.compile(optimizer=keras.optimizers.Adam(0.05), weighting="dwa")
    history = model.fit(X, Y, epochs=4, batch_size=32, verbose=0, validation_data=(X, Y), callbacks=[
        keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(logs["weight_a"]))]).history
    assert seen == history["weight_a"] and seen[0] == 1.0 and len(set(seen[2:])) > 1  # DWA moves from epoch 3
    assert history["val_a_loss"][-1] < history["val_a_loss"][0]
    assert "val_weight_a" not in history
    evaluated = model.evaluate(X, Y, verbose=0, return_dict=True)
    np.testing.assert_allclose(evaluated["a_loss"], history["val_a_loss"][-1], rtol=1e-5)


@pytest.mark.parametrize("weighting", [pytest.param("uncertainty", marks=pytest.mark.slow),
                                       pytest.param("dwa", marks=pytest.mark.slow), "pcgrad"])
def test_a_keras_file_round_trip_resumes_the_strategys_state(tmp_path, weighting):
    """2 epochs, saved and reloaded (safe mode), 2 more: as 4 uninterrupted ones."""
    whole = mtl_tf.MultiTaskModel.from_model(_model())
    whole.compile(optimizer=keras.optimizers.Adam(0.01), weighting=weighting)
    whole.fit(X, Y, epochs=4, batch_size=16, shuffle=False, verbose=0)
    cut = mtl_tf.MultiTaskModel.from_model(_model())
    cut.compile(optimizer=keras.optimizers.Adam(0.01), weighting=weighting)
    cut.fit(X, Y, epochs=2, batch_size=16, shuffle=False, verbose=0)
    cut.save(tmp_path / "m.keras")
    resumed = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    assert isinstance(resumed, mtl_tf.MultiTaskModel) and resumed.weighting.name == weighting
    resumed.fit(X, Y, epochs=4, initial_epoch=2, batch_size=16, shuffle=False, verbose=0)
    for v, w in zip(resumed.weights, whole.weights):
        np.testing.assert_allclose(v.numpy(), w.numpy(), rtol=1e-5, atol=1e-6, err_msg=v.path)
    for v, w in zip(resumed.weighting.variables, whole.weighting.variables):
        np.testing.assert_allclose(v.numpy(), w.numpy(), rtol=1e-5, atol=1e-6)


def test_a_plain_keras_tuner_hypermodel_searches_with_it(tmp_path):
    class HyperModel(keras_tuner.HyperModel):
        def build(self, hp):
            model = mtl_tf.MultiTaskModel.from_model(_model())
            model.compile(optimizer=keras.optimizers.Adam(hp.Choice("learning_rate", [1e-2, 1e-3])),
                          weighting=hp.Choice("weighting", ["equal", "pcgrad", "uncertainty"]))
            return model

    tuner = keras_tuner.RandomSearch(HyperModel(), objective=keras_tuner.Objective("val_mean_loss", "min"),
                                     max_trials=2, directory=tmp_path, project_name="plain", seed=1)
    tuner.search(X, Y, epochs=2, batch_size=32, validation_data=(X, Y), verbose=0)
    trials = tuner.oracle.get_best_trials(2)
    assert len(trials) == 2 and all(np.isfinite(t.score) for t in trials)
    best = tuner.get_best_models(1)[0]
    assert isinstance(best, mtl_tf.MultiTaskModel)


def test_compile_refuses_what_it_cannot_do():
    model = mtl_tf.MultiTaskModel.from_model(_model())
    with pytest.raises(ValueError, match=r"not \['loss_weights'\].*'fixed'"):
        model.compile(loss={"a": "sparse_categorical_crossentropy"}, loss_weights={"a": 1.0})
    with pytest.raises(ValueError, match="Unknown weighting strategy|weighting"):
        model.compile(weighting="pcgard")
    with pytest.raises(ValueError, match=r"`loss\['b'\]` must be one of"):
        model.compile(loss={"a": "sparse_categorical_crossentropy", "b": "hinge"})
    with pytest.raises(ValueError, match="no output for"):
        model.compile(tasks={"a": 3, "c": 2})
    with pytest.raises(RuntimeError, match="Call `compile"):
        mtl_tf.MultiTaskModel.from_model(_model()).fit(X, Y, verbose=0)
    model.compile(loss={"a": "sparse_categorical_crossentropy", "b": "sparse_categorical_crossentropy"})
    assert [t.kind for t in model.tasks] == ["multiclass", "multiclass"]
    with pytest.raises(ValueError, match="Missing: \\['b'\\]"):
        model.fit(X, {"a": Y["a"]}, epochs=1, verbose=0)


@pytest.mark.slow
def test_under_multiworker_mirrored_strategy_compile_says_to_use_the_trainer():
    code = """
import tensorflow as tf, keras, mtl_tf
strategy = tf.distribute.MultiWorkerMirroredStrategy()
with strategy.scope():
    inputs = keras.Input((4,))
    model = mtl_tf.MultiTaskModel(inputs, {"a": keras.layers.Dense(2)(inputs)})
    try:
        model.compile(weighting="pcgrad")
    except ValueError as error:
        print("REFUSED", error)
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2],
                            capture_output=True, text=True, timeout=300)
    assert "REFUSED" in result.stdout and "training.Trainer" in result.stdout, result.stderr[-2000:]


@pytest.mark.slow  # the registry's round trips export the same functional graphs
def test_a_fitted_model_exports_like_any_zoo_model(tmp_path):
    from tests.helpers import run_saved_model_roundtrip

    model = mtl_tf.MultiTaskModel.from_model(_model())
    model.compile(weighting="pcgrad")
    model.fit(X, Y, epochs=1, batch_size=32, verbose=0)
    assert run_saved_model_roundtrip(model, tmp_path / "saved", X[:8]) == ["a", "b", "serving_default"]


_MIRRORED = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
import keras, numpy as np, mtl_tf
from tests.mtl_tf.test_keras_model import X, Y, _model
with strategy.scope():
    model = mtl_tf.MultiTaskModel.from_model(_model())
    model.compile(optimizer=keras.optimizers.SGD(0.5), weighting=sys.argv[2])
history = model.fit(X, Y, epochs=2, batch_size=32, shuffle=False, verbose=0).history
np.savez(sys.argv[1], *[v.numpy() for v in model.trainable_variables], loss=history["loss"],
         weight_a=history["weight_a"])
"""


# Slow: two replicas in a subprocess; the step they run (mtl_tf.step) is checked under
# MirroredStrategy by the Trainer's default tests.
@pytest.mark.slow
@pytest.mark.parametrize("weighting", ["pcgrad", "uncertainty"])
def test_fit_under_mirrored_strategy_equals_one_device(tmp_path, weighting):
    """Two replicas of 16 examples each: the Gram matrix and the losses are all-reduced in
    the step, and the logs are the global batch's."""
    out = tmp_path / "mirrored.npz"
    result = subprocess.run([sys.executable, "-c", _MIRRORED, str(out), weighting],
                            cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = np.load(out)
    model = mtl_tf.MultiTaskModel.from_model(_model())
    model.compile(optimizer=keras.optimizers.SGD(0.5), weighting=weighting)
    history = model.fit(X, Y, epochs=2, batch_size=32, shuffle=False, verbose=0).history
    for i, v in enumerate(model.trainable_variables):
        np.testing.assert_allclose(saved[f"arr_{i}"], v.numpy(), rtol=2e-4, atol=2e-6, err_msg=v.path)
    np.testing.assert_allclose(saved["loss"], history["loss"], rtol=1e-4)
    np.testing.assert_allclose(saved["weight_a"], history["weight_a"], rtol=1e-4)


def test_backup_and_restore_resumes_a_fit_cut_off_mid_run_to_the_uninterrupted_weights(tmp_path):
    """Keras's BackupAndRestore saves the weights with the strategy's state (DWA's loss
    history) and the optimizer's; a fit stopped by an error in epoch 3 and started again
    ends where 4 uninterrupted epochs do."""
    class Stop(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt

    def run(callbacks):
        model = mtl_tf.MultiTaskModel.from_model(_model())
        model.compile(optimizer=keras.optimizers.Adam(0.01), weighting="dwa")
        model.fit(X, Y, epochs=4, batch_size=16, shuffle=False, verbose=0, callbacks=callbacks)
        return model

    whole = run([])
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(KeyboardInterrupt):
        run([backup, Stop()])
    resumed = run([keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))])
    for v, w in zip(resumed.weights, whole.weights):
        np.testing.assert_allclose(v.numpy(), w.numpy(), rtol=1e-5, atol=1e-6, err_msg=v.path)
    for v, w in zip(resumed.weighting.variables, whole.weighting.variables):
        np.testing.assert_allclose(v.numpy(), w.numpy(), rtol=1e-5, atol=1e-6)


def test_keras_callbacks_tf_data_and_steps_per_execution_work_as_with_any_keras_model(tmp_path):
    """A tf.data input, several steps per compiled call (the same weights as one per
    call), EarlyStopping on a task's validation loss, ModelCheckpoint of the best epoch
    (a `.keras` file that reloads with its strategy), TensorBoard's event files."""
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((X, Y)).batch(16)
    once = mtl_tf.MultiTaskModel.from_model(_model())
    once.compile(optimizer=keras.optimizers.Adam(0.01), weighting="pcgrad")
    once.fit(data, epochs=2, verbose=0)
    model = mtl_tf.MultiTaskModel.from_model(_model())
    model.compile(optimizer=keras.optimizers.Adam(0.01), weighting="pcgrad", steps_per_execution=3)
    model.fit(data, epochs=2, verbose=0)
    for v, w in zip(model.trainable_variables, once.trainable_variables):
        np.testing.assert_allclose(v.numpy(), w.numpy(), rtol=1e-5, atol=1e-6, err_msg=v.path)
    best = tmp_path / "best.keras"
    history = model.fit(data, epochs=30, verbose=0, validation_data=(X, Y), callbacks=[
        keras.callbacks.EarlyStopping("val_a_loss", mode="min", patience=1, min_delta=0.02),
        keras.callbacks.ModelCheckpoint(best, monitor="val_a_loss", mode="min", save_best_only=True),
        keras.callbacks.TensorBoard(tmp_path / "logs")]).history
    assert len(history["loss"]) < 30  # stopped early
    reloaded = keras.models.load_model(best)
    assert reloaded.weighting.name == "pcgrad"
    np.testing.assert_allclose(reloaded.evaluate(X, Y, verbose=0, return_dict=True)["a_loss"],
                               min(history["val_a_loss"]), rtol=1e-5)
    assert list((tmp_path / "logs" / "train").glob("events.out.tfevents.*"))
