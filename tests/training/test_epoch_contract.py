"""What one epoch of `Trainer.fit` promises: its order of events, which epochs a call
trains, what a resumed run must match, and what it refuses."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from training import Trainer
from training.callbacks import Evaluate

ROOT = Path(__file__).resolve().parents[2]


def _data(n=100, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype("float32")
    return x, {"a": (x[:, 0] > 0).astype("int64"), "b": (x[:, 1] + x[:, 2] > 0).astype("int64")}


def _model():
    keras.utils.set_random_seed(0)
    return zoo.build("hard_sharing", tasks={"a": 2, "b": 2}, input_shape=(8,), trunk="dense",
                     units=(16,))


def _rows(run_dir):
    with open(run_dir / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


class HalveLearningRate(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.model.optimizer.learning_rate.assign(self.model.optimizer.learning_rate * 0.5)


def test_what_callbacks_change_at_epoch_end_is_in_the_checkpoint(tmp_path):
    x, y = _data()
    Trainer(_model(), optimizer=keras.optimizers.Adam(0.08), run_dir=tmp_path).fit(
        x, y, epochs=2, batch_size=32, callbacks=[HalveLearningRate()], verbose=0)
    resumed = Trainer(_model(), optimizer=keras.optimizers.Adam(0.08), run_dir=tmp_path)
    assert resumed.restore() == 2
    assert float(resumed.optimizer.learning_rate.numpy()) == pytest.approx(0.02)


def test_metrics_callbacks_add_reach_tensorboard(tmp_path):
    x, y = _data()
    Trainer(_model(), run_dir=tmp_path).fit(x, y, epochs=2, batch_size=32, verbose=0,
                                            callbacks=[Evaluate((x, y))])
    tags = set()
    for events in (tmp_path / "tensorboard" / "train").iterdir():
        for event in tf.compat.v1.train.summary_iterator(str(events)):
            tags |= {value.tag for value in event.summary.value}
    assert {"test_a_accuracy", "test_b_loss", "a_loss", "weight_b"} <= tags


def test_a_run_stopped_after_its_history_row_trains_that_epoch_once_more(tmp_path, monkeypatch):
    """Killed after the epoch's callbacks wrote its row but before its checkpoint: the
    resumed run drops the orphan row, so the history has one row per epoch."""
    x, y = _data()
    save = Trainer._save

    def killed_at_epoch_two(self, epoch, **kwargs):
        if epoch == 1:
            raise KeyboardInterrupt
        save(self, epoch, **kwargs)

    monkeypatch.setattr(Trainer, "_save", killed_at_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        Trainer(_model(), run_dir=tmp_path).fit(x, y, epochs=3, batch_size=32, verbose=0)
    assert [r["epoch"] for r in _rows(tmp_path)] == ["0", "1"]  # the orphan row of epoch 1
    monkeypatch.setattr(Trainer, "_save", save)
    history = Trainer(_model(), run_dir=tmp_path).fit(x, y, epochs=3, batch_size=32, verbose=0)
    assert len(history.history["loss"]) == 2  # epochs 1 and 2, trained after the restore
    assert [r["epoch"] for r in _rows(tmp_path)] == ["0", "1", "2"]


def test_fit_called_again_trains_more_epochs_and_initial_epoch_follows_keras():
    x, y = _data()
    trainer = Trainer(_model())
    first = trainer.fit(x, y, epochs=2, batch_size=32, verbose=0)
    kernel = trainer.model.get_layer("trunk").weights[0].numpy().copy()
    second = trainer.fit(x, y, epochs=3, batch_size=32, verbose=0)
    assert len(first.history["loss"]) == 2 and len(second.history["loss"]) == 3
    assert int(trainer.epoch.numpy()) == 5
    assert not np.array_equal(kernel, trainer.model.get_layer("trunk").weights[0].numpy())
    third = trainer.fit(x, y, epochs=4, initial_epoch=2, batch_size=32, verbose=0)
    assert len(third.history["loss"]) == 2 and int(trainer.epoch.numpy()) == 4


def test_a_restored_run_trains_up_to_epochs_then_more_on_a_second_call(tmp_path):
    x, y = _data()
    Trainer(_model(), run_dir=tmp_path).fit(x, y, epochs=2, batch_size=32, verbose=0)
    trainer = Trainer(_model(), run_dir=tmp_path)
    assert len(trainer.fit(x, y, epochs=3, batch_size=32, verbose=0).history["loss"]) == 1
    assert len(trainer.fit(x, y, epochs=3, batch_size=32, verbose=0).history["loss"]) == 3
    assert len(_rows(tmp_path)) == 6


def test_the_partial_last_batch_does_not_trace_the_step_again():
    x, y = _data(n=100)  # batches of 32, 32, 32 and 4
    trainer = Trainer(_model())
    trainer.fit(x, y, epochs=2, batch_size=32, verbose=0)
    assert trainer._train_function.experimental_get_tracing_count() == 1


def test_a_model_with_layers_outside_its_trunk_and_heads_is_refused():
    inputs = keras.Input((8,))
    scaled = keras.layers.Rescaling(0.5)(inputs)
    trunk = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)], name="trunk")
    head = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)], name="head_a")
    model = keras.Model(inputs, {"a": head(trunk(scaled))})
    with pytest.raises(ValueError, match=r"not just paths on the trunk.*`trunk` does not read "
                                         r"the model's input directly"):
        Trainer(model)
    after = keras.layers.Dense(2)(head(trunk(inputs)))
    with pytest.raises(ValueError, match=r"output 'a' is not the output of layer `head_a`"):
        Trainer(keras.Model(inputs, {"a": after}))


@pytest.mark.parametrize("change, message", [
    ({"weighting": "uncertainty"}, r"'weighting': \(\{'class_name': 'equal'"),
    ({"tasks": [{"name": "a", "num_outputs": 2}]}, r"'tasks'"),
])
def test_resuming_with_other_settings_is_refused(tmp_path, change, message):
    x, y = _data()
    Trainer(_model(), run_dir=tmp_path).fit(x, y, epochs=1, batch_size=32, verbose=0)
    with pytest.raises(ValueError, match=r"`run_dir` .* holds a run with other settings.*" + message):
        Trainer(_model(), run_dir=tmp_path, **change).fit(x, y, epochs=2, batch_size=32, verbose=0)


def test_another_schedule_length_is_refused_and_a_mismatched_one_warns(tmp_path):
    x, y = _data()
    with pytest.warns(UserWarning, match=r"`lin` schedule was made for epochs=4 but the run ends "
                                         r"after epoch 2"):
        Trainer(_model(), weighting={"class_name": "lin", "config": {"epochs": 4}},
                run_dir=tmp_path).fit(x, y, epochs=2, batch_size=32, verbose=0)
    with pytest.raises(ValueError, match=r"'epochs': 4.*'epochs': 6"):
        Trainer(_model(), weighting={"class_name": "lin", "config": {"epochs": 6}},
                run_dir=tmp_path).fit(x, y, epochs=6, batch_size=32, verbose=0)


def test_a_non_finite_loss_names_the_task_and_step_and_keeps_the_checkpoints(tmp_path):
    x, y = _data(n=96)
    trainer = Trainer(_model(), run_dir=tmp_path, seed=0)
    trainer.fit(x, y, epochs=1, batch_size=32, verbose=0)
    before = [v.numpy().copy() for v in trainer.model.weights]
    x_bad = x.copy()
    x_bad[:, 3] = np.inf  # every logit turns NaN
    with pytest.raises(FloatingPointError, match=r"task 'a' is NaN or Inf at epoch 2, step 1 of 3"):
        trainer.fit(x_bad, y, epochs=1, batch_size=32, verbose=0)
    for want, got in zip(before, trainer.model.weights):
        np.testing.assert_array_equal(got.numpy(), want)  # the failing step changed nothing
    assert Trainer(_model(), run_dir=tmp_path).restore() == 1


@pytest.mark.parametrize("x, y, message", [
    (np.zeros((4, 7), "float32"), None, r"`x` must have shape \(batch, 8\) for this model. Received shape \(4, 7\)"),
    (np.array([["a"] * 8] * 4), None, r"`x` must hold numbers. Received dtype <U1"),
    (None, {"a": np.array([0, 1, 2, 0]), "b": np.zeros(4, "int64")},
     r"multiclass task 'a' must be integers in \[0, 2\), or -1 where unlabelled. Received e.g. \[2\]"),
    (None, {"a": np.array([0.5, 1, 0, 0]), "b": np.zeros(4, "int64")}, r"task 'a' must be integers"),
    (None, {"a": np.zeros(3, "int64"), "b": np.zeros(4, "int64")}, r"task 'a' hold 3 examples for 4 inputs"),
])
def test_bad_arrays_are_refused_before_the_graph(x, y, message):
    x = np.zeros((4, 8), "float32") if x is None else x
    y = {"a": np.zeros(4, "int64"), "b": np.zeros(4, "int64")} if y is None else y
    trainer = Trainer(_model())
    with pytest.raises(ValueError, match=message):
        trainer.fit(x, y, verbose=0)
    with pytest.raises(ValueError, match=message.replace("`x`", "`data`")):
        trainer.evaluate((x, y))


@pytest.mark.parametrize("kwargs, message", [
    ({"epochs": 0}, r"epochs=0"), ({"epochs": 2.5}, r"epochs=2.5"), ({"batch_size": -1}, r"batch_size=-1"),
    ({"epochs": 2, "initial_epoch": 2}, r"initial_epoch=2"), ({"verbose": "loud"}, r"verbose='loud'"),
])
def test_bad_fit_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Trainer(_model()).fit(*_data(), **kwargs)


def test_piped_output_has_one_line_per_epoch_and_no_device_errors(tmp_path):
    code = """
import numpy as np
import zoo
from training import Trainer
x = np.random.default_rng(0).normal(size=(640, 8)).astype("float32")
y = {"a": (x[:, 0] > 0).astype("int64"), "b": (x[:, 1] > 0).astype("int64")}
model = zoo.build("hard_sharing", tasks={"a": 2, "b": 2}, input_shape=(8,), trunk="dense")
Trainer(model).fit(x, y, epochs=3, batch_size=32)
"""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert [line.split("/")[0] for line in lines if line.startswith("Epoch")] == ["Epoch 1", "Epoch 2", "Epoch 3"]
    assert len(lines) == 6 and "\r" not in result.stdout and "\b" not in result.stdout, result.stdout
    assert all("a_accuracy" in line for line in lines[1::2])
    for noise in ("cuInit", "cuda drivers", "oneDNN", "absl::InitializeLog"):
        assert noise not in result.stderr, result.stderr


@pytest.mark.parametrize("rate", [0, -1e-3, float("nan"), "fast"])
def test_a_bad_learning_rate_is_named(rate):
    with pytest.raises(ValueError, match=r"`learning_rate` must be a positive number. Received: learning_rate="):
        Trainer(_model(), learning_rate=rate)


def test_unshuffled_training_visits_the_batches_in_order():
    """`shuffle=False` (paper 003's authors' loop): every epoch reads the arrays in order."""
    x, y = _data(n=96)
    x[:, 7] = np.arange(96)  # each example's index, read back inside the step
    seen = []
    trainer = Trainer(_model(), shuffle=False)
    original = trainer.step.train

    def recording(inputs, labels):
        tf.py_function(lambda v: seen.append(v.numpy().astype(int).tolist()) or 0, [inputs[:, 7]], tf.int32)
        return original(inputs, labels)

    trainer._train_function = tf.function(trainer._on_iterator(recording, trainer._train_totals), autograph=False)
    trainer.fit(x, y, epochs=2, batch_size=32, verbose=0)
    assert seen == [list(range(i, i + 32)) for i in (0, 32, 64)] * 2
    shuffled = Trainer(_model())._dataset(x, y, 32, 0)[0]
    first = next(iter(shuffled))[0][:, 7].numpy().astype(int).tolist()
    assert first != list(range(32))


class _Extra(keras.callbacks.Callback):
    """A newer version's extra metric, logged only by the resumed sitting."""

    def on_epoch_end(self, epoch, logs=None):
        logs["extra_metric"] = 100.0 + epoch


def test_a_resumed_run_logging_new_keys_keeps_every_row_under_its_own_columns(tmp_path):
    x, y = _data()
    Trainer(_model(), run_dir=tmp_path).fit(x, y, epochs=2, batch_size=32, verbose=0)
    first = _rows(tmp_path)
    Trainer(_model(), run_dir=tmp_path).fit(x, y, epochs=4, batch_size=32, verbose=0, callbacks=[_Extra()])
    rows = _rows(tmp_path)
    assert [r["epoch"] for r in rows] == ["0", "1", "2", "3"]
    assert [r["extra_metric"] for r in rows] == ["", "", "102.0", "103.0"]
    for before, after in zip(first, rows[:2]):  # the earlier rows, value for value
        assert {k: after[k] for k in before} == before
    assert all(float(r["loss"]) > 0 for r in rows)
