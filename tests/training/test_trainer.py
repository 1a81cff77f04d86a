"""The Trainer: learning, callbacks, logs, resume after a kill, distribution, bad input."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

import zoo
from mtl_tf import weighting
from tests.helpers import two_task_batch
from training import Trainer

ROOT = Path(__file__).resolve().parents[2]
TASKS = {"mnist": 10, "fashion_mnist": 10}


def _model():
    return zoo.build("hard_sharing", tasks=TASKS, input_shape=(28, 28, 1), trunk="dense",
                     units=(64,))


def _lowering_cases():
    """Every strategy with the heads frozen; with them free too where the strategy weights
    the heads (for the others the heads get their plain gradients: test-slow)."""
    for name in weighting.available():
        cls = weighting.strategy_class(name)
        # Krum and the trimmed mean train a third task: test-slow.
        yield pytest.param(name, "heads", marks=pytest.mark.slow if cls.min_tasks > 2 else ())
        weighted = cls.weights_heads or not issubclass(cls, weighting.GradientLevel)
        yield pytest.param(name, None, marks=() if weighted else pytest.mark.slow)


@pytest.mark.parametrize("name, frozen", list(_lowering_cases()))
def test_every_weighting_strategy_lowers_the_loss(name, frozen):
    """With the heads frozen, only the shared trunk's update (the one each strategy
    combines) can lower the loss: an update of the wrong sign there raises it."""
    keras.utils.set_random_seed(0)
    kwargs = {"fixed": {"weights": [1.0, 2.0]}, "stairs_t1": {"t1": 1}, "lin": {"epochs": 3},
              "lin_t1": {"t1": 2}, "exp_sigma": {"sigma": 2}, "stch": {"warmup_epochs": 0}}.get(name, {})
    x, y = two_task_batch()
    tasks = TASKS
    if weighting.strategy_class(name).min_tasks > 2:  # Krum, TrimmedMean: a third task, mnist again
        tasks, y = {**TASKS, "mnist_again": 10}, {**y, "mnist_again": y["mnist"]}
    model = zoo.build("hard_sharing", tasks=tasks, input_shape=(28, 28, 1), trunk="dense", units=(64,))
    if frozen:
        for task in tasks:
            model.get_layer(f"head_{task}").trainable = False
    trainer = Trainer(model, weighting=weighting.get(name, **kwargs))
    before = trainer.evaluate((x, y))
    history = trainer.fit(x, y, epochs=3, batch_size=64, verbose=0)
    after = trainer.evaluate((x, y))
    watched = "mnist_loss" if name == "krum" else "loss"  # Krum follows the majority (mnist, twice)
    assert after[watched] < (0.85 if frozen else 0.7) * before[watched], (before, after)
    assert len(history.history["weight_mnist"]) == 3


def test_logs_history_csv_tensorboard_and_callbacks(tmp_path):
    x, y = two_task_batch()
    trainer = Trainer(_model(), weighting="uncertainty", run_dir=tmp_path)
    stopper = keras.callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=10.0)
    board = keras.callbacks.TensorBoard(str(tmp_path / "keras_board"))
    best = keras.callbacks.ModelCheckpoint(str(tmp_path / "best.keras"), monitor="loss")
    history = trainer.fit(x, y, epochs=5, batch_size=64, validation_data=(x, y),
                          callbacks=[stopper, board, best], verbose=0)
    # Keras's own callbacks work unchanged in the loop.
    assert list((tmp_path / "keras_board" / "train").iterdir())
    assert (tmp_path / "best.keras").is_file()
    # EarlyStopping (min_delta 10 is never reached) stops after its patience.
    assert len(history.history["loss"]) == 2
    keys = {"loss", "mnist_loss", "mnist_accuracy", "fashion_mnist_accuracy", "weight_mnist",
            "val_mnist_accuracy", "val_loss"}
    assert keys <= set(history.history)
    rows = list(csv.DictReader(open(tmp_path / "history.csv")))
    assert len(rows) == 2 and float(rows[1]["weight_mnist"]) == pytest.approx(
        history.history["weight_mnist"][1], rel=1e-5)
    assert list((tmp_path / "tensorboard" / "train").iterdir())
    assert list((tmp_path / "tensorboard" / "validation").iterdir())
    assert (tmp_path / "checkpoints" / "checkpoint").is_file()


def _run_script(run_dir, epochs, out, layout="single", **popen):
    return subprocess.Popen([sys.executable, "-m", "tests.training.resume_script", str(run_dir),
                             str(epochs), str(out), layout], cwd=ROOT, **popen)


STATEFUL = {"uncertainty": "uncertainty", "dwa": "dwa", "gradnorm": "gradnorm",
            "exp_sigma": '{"class_name": "exp_sigma", "config": {"sigma": 2}}',
            "rlw": "rlw", "famo": "famo", "gradvac": "gradvac", "imtl": "imtl", "db_mtl": "db_mtl",
            "moco": "moco", "excess_mtl": "excess_mtl", "graddrop": "graddrop", "modo": "modo",
            "sdmgrad": "sdmgrad", "pcd": "pcd",
            "cr_mogm": '{"class_name": "cr_mogm", "config": {"base": "pcgrad"}}',
            "stch": '{"class_name": "stch", "config": {"warmup_epochs": 1}}'}


class _Crash(keras.callbacks.Callback):
    """Stops a run mid-epoch 3, as a crash would: after the second checkpoint."""

    def on_train_batch_begin(self, batch, logs=None):
        if self.epoch == 2 and batch == 5:
            raise KeyboardInterrupt

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch


# One of each kind of state in the default suite, the rest in test-slow.
QUICK_RESUME = {"uncertainty", "dwa", "gradnorm", "exp_sigma", "rlw", "famo", "gradvac", "moco", "modo"}


@pytest.mark.parametrize("name", [n if n in QUICK_RESUME else pytest.param(n, marks=pytest.mark.slow)
                                  for n in sorted(STATEFUL)])
def test_a_run_stopped_mid_epoch_resumes_to_the_same_weights(tmp_path, name):
    """Every strategy with state (learned weights, loss history, a schedule mid-way): a new
    trainer on the run directory ends bit for bit where an uninterrupted run ends. In this
    process; the run killed with SIGKILL is the next test's (and tests/faults')."""
    import json

    spec = STATEFUL[name]
    spec = json.loads(spec) if spec.startswith("{") else spec
    x, y = two_task_batch(256)

    def run(run_dir, callbacks=()):
        keras.utils.set_random_seed(0)
        trainer = Trainer(_model(), weighting=spec, optimizer=keras.optimizers.Adam(1e-3),
                          run_dir=run_dir, seed=3)
        trainer.fit(x, y, epochs=4, batch_size=32, verbose=0, callbacks=list(callbacks))
        return [v.numpy() for v in trainer.model.weights + list(trainer.weighting.variables)]

    want = run(None)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, [_Crash()])
    assert (tmp_path / "checkpoints" / "ckpt-2.index").is_file()
    assert not (tmp_path / "checkpoints" / "ckpt-3.index").exists()
    for got, value in zip(run(tmp_path), want):
        np.testing.assert_array_equal(got, value)


# Slow: the stopped-mid-epoch test above resumes every stateful strategy in the default
# suite, and tests/faults/test_sigkill.py kills runs with SIGKILL there.
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(STATEFUL))
def test_a_killed_run_resumes_to_the_same_weights(tmp_path, name):
    """SIGKILL, no chance to clean up; gradnorm (learned weights and initial losses) in the
    default suite, the other strategies with state in the slow one."""
    epochs = 4
    env = {**os.environ, "WEIGHTING": STATEFUL[name]}
    reference = _run_script("-", epochs, tmp_path / "reference.npz", env=env)
    killed = _run_script(tmp_path / "run", epochs, tmp_path / "never.npz",
                         stderr=subprocess.DEVNULL, env=env)
    marker = tmp_path / "run" / "checkpoints" / "ckpt-2.index"
    deadline = time.time() + 240
    while not marker.exists() and killed.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert marker.exists(), "the run never reached its second checkpoint"
    killed.send_signal(signal.SIGKILL)  # mid-epoch 3, with no chance to clean up
    killed.wait()
    assert not (tmp_path / "never.npz").exists()
    resumed = _run_script(tmp_path / "run", epochs, tmp_path / "resumed.npz", env=env)
    assert resumed.wait(timeout=300) == 0 and reference.wait(timeout=300) == 0
    want, got = np.load(tmp_path / "reference.npz"), np.load(tmp_path / "resumed.npz")
    assert sorted(want.files) == sorted(got.files)
    for key in want.files:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


# The general architectures, dense experts and backbones to keep them quick (slow suite).
ARCHITECTURES = {"mmoe": {"expert": "dense"}, "ple": {"expert": "dense"}, "dselect_k": {"expert": "dense"},
                 "mtan": {"backbone": "dense"}, "cross_stitch": {"network": "dense", "units": [32, 16]},
                 "learning_to_branch": {"network": "dense", "units": [32, 16], "seed": 0}}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_a_killed_run_of_each_architecture_resumes_to_the_same_weights(tmp_path, name):
    """SIGKILL mid-epoch 3 of a run with MGDA at the graph cut (Cross-stitch: in parameter
    mode); the resumed run ends bit for bit where an uninterrupted one does (Learning to
    Branch's search network: its Gumbel draws too)."""
    import json

    env = {**os.environ, "WEIGHTING": "mgda", "MODEL": json.dumps({"name": name, **ARCHITECTURES[name]})}
    reference = _run_script("-", 4, tmp_path / "reference.npz", env=env)
    killed = _run_script(tmp_path / "run", 4, tmp_path / "never.npz", stderr=subprocess.DEVNULL, env=env)
    marker = tmp_path / "run" / "checkpoints" / "ckpt-2.index"
    deadline = time.time() + 240
    while not marker.exists() and killed.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert marker.exists(), "the run never reached its second checkpoint"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    resumed = _run_script(tmp_path / "run", 4, tmp_path / "resumed.npz", env=env)
    assert resumed.wait(timeout=300) == 0 and reference.wait(timeout=300) == 0
    want, got = np.load(tmp_path / "reference.npz"), np.load(tmp_path / "resumed.npz")
    for key in want.files:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


@pytest.mark.slow  # whole runs under MultiWorkerMirrored (below) and Mirrored steps (test_step_reference) stay
def test_mirrored_strategy_on_two_devices_matches_one_device(tmp_path):
    one = _run_script("-", 2, tmp_path / "one.npz")
    two = _run_script("-", 2, tmp_path / "two.npz", "mirrored")
    assert one.wait(timeout=300) == 0 and two.wait(timeout=300) == 0
    _assert_same_run(np.load(tmp_path / "two.npz"), np.load(tmp_path / "one.npz"))


def _assert_same_run(got, want):
    """Two runs that sum in another order end at the same weights: each within 0.1% of the
    distance training moved it (measured: 3.5e-7 at most, two replicas, 2 epochs). Not
    elementwise: over many steps a rounding difference can flip a ReLU and grow in a few
    entries. The strategy's own variables (Kendall's log-variances) are compared as values."""
    for key in want.files:
        if key.startswith("w"):
            moved = np.linalg.norm(want[key] - want[f"initial_{key}"])
            assert moved > 0 and np.linalg.norm(got[key] - want[key]) < 1e-3 * moved, key
        elif key.startswith("s"):
            np.testing.assert_allclose(got[key], want[key], rtol=2e-3, atol=2e-4, err_msg=key)


def test_label_dict_must_match_the_tasks():
    x, y = two_task_batch()
    trainer = Trainer(_model())
    with pytest.raises(ValueError, match=r"Missing: \['fashion_mnist'\]; unknown: \['fashion'\]"):
        trainer.fit(x, {"mnist": y["mnist"], "fashion": y["fashion_mnist"]}, verbose=0)


def test_bad_trainer_arguments_are_named():
    with pytest.raises(ValueError, match=r"weighting='pcgard'.*Did you mean 'pcgrad'"):
        Trainer(_model(), weighting="pcgard")
    with pytest.raises(ValueError, match=r"no output for: \['letters'\]"):
        Trainer(_model(), tasks={"letters": 10})
    with pytest.raises(ValueError, match=r"epochs=0"):
        Trainer(_model()).fit(*two_task_batch(), epochs=0)
    inputs = keras.Input((4,))
    apart = keras.Model(inputs, {"a": keras.layers.Dense(2)(inputs), "b": keras.layers.Dense(2)(inputs)})
    x = np.ones((8, 4), "float32")
    y = {"a": np.zeros(8, "int64"), "b": np.ones(8, "int64")}
    with pytest.raises(ValueError, match=r"no variable that two tasks share"):
        Trainer(apart, weighting="mgda").fit(x, y, verbose=0)
    assert Trainer(apart, weighting="uncertainty").task_names == ("a", "b")


def test_two_workers_on_localhost_match_one_device(tmp_path):
    from training.distributed import free_ports, tf_config

    epochs = 4  # more than the 3 checkpoints kept, so old ones are swept too
    one = _run_script("-", epochs, tmp_path / "one.npz")
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": tf_config(workers, index)}
        processes.append(_run_script(tmp_path / "run", epochs, tmp_path / f"worker{index}.npz",
                                     "multiworker", env=env, stderr=subprocess.PIPE))
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err.decode()[-3000:]
    assert one.wait(timeout=300) == 0
    want = np.load(tmp_path / "one.npz")
    for index in range(2):
        _assert_same_run(np.load(tmp_path / f"worker{index}.npz"), want)
    # Only the chief writes the run: its checkpoints and history, no worker scratch left.
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "checkpoints", "history.csv", "tensorboard", "trainer.json"]
    assert (tmp_path / "run" / "checkpoints" / "ckpt-4.index").is_file()
    assert len((tmp_path / "run" / "history.csv").read_text().splitlines()) == 1 + epochs


class _GradientProbe(keras.callbacks.Callback):
    """Reads the per-task representation gradients at every epoch end."""

    def __init__(self, x, y):
        super().__init__()
        self.x, self.y, self.norms = x, y, []

    def set_trainer(self, trainer):
        self.trainer = trainer

    def on_epoch_end(self, epoch, logs=None):
        grads = self.trainer.task_gradients(self.x, self.y, "representation")
        self.norms.append(np.linalg.norm(np.asarray(grads).reshape(2, -1), axis=1))


def test_callbacks_can_read_per_task_gradients():
    x, y = two_task_batch()
    # Every 8th example: both tasks labelled in the probe batch (the first 64 are all MNIST).
    probe = _GradientProbe(x[::8], {t: v[::8] for t, v in y.items()})
    Trainer(_model()).fit(x, y, epochs=2, batch_size=64, callbacks=[probe], verbose=0)
    assert len(probe.norms) == 2 and all((n > 0).all() for n in probe.norms)


def test_fit_accepts_a_finite_tf_data_dataset():
    import tensorflow as tf

    x, y = two_task_batch()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(512, seed=0).batch(64)
    trainer = Trainer(_model(), weighting="dwa")
    before = trainer.evaluate(dataset)["loss"]
    history = trainer.fit(dataset, epochs=3, verbose=0)
    assert len(history.history["loss"]) == 3
    assert trainer.evaluate(dataset)["loss"] < 0.7 * before
    with pytest.raises(ValueError, match="known, finite"):
        trainer.fit(dataset.repeat(), epochs=1, verbose=0)


class _Interrupt(keras.callbacks.Callback):
    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.at:
            raise KeyboardInterrupt


def test_epochs_of_fewer_steps_than_the_data_run_on_through_the_passes_and_resume_there(tmp_path):
    x, y = two_task_batch(40)
    assert len(x) == 80  # 10 batches of 8 a pass; epochs of 3 batches straddle the passes

    def trainer(run_dir=None):
        keras.utils.set_random_seed(0)
        return Trainer(_model(), run_dir=run_dir, learning_rate=1e-3, seed=5)

    whole = trainer()
    whole.fit(x, y, epochs=3, batch_size=8, verbose=0)  # 30 batches
    parts = trainer()
    history = parts.fit(x, y, epochs=10, batch_size=8, verbose=0, steps_per_epoch=3)
    assert len(history.history["loss"]) == 10
    for a, b in zip(parts.model.weights, whole.model.weights):  # the same 30 batches in order
        np.testing.assert_array_equal(a.numpy(), b.numpy())

    first = trainer(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):  # stopped in epoch 5, after epoch 4's checkpoint (batch 12 next)
        first.fit(x, y, epochs=10, batch_size=8, verbose=0, steps_per_epoch=3, callbacks=[_Interrupt(5)])
    resumed = trainer(tmp_path / "run")
    assert resumed.restore() == 4
    resumed.fit(x, y, epochs=10, batch_size=8, verbose=0, steps_per_epoch=3)
    for a, b in zip(resumed.model.weights, whole.model.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"steps_per_epoch=0"):
        parts.fit(x, y, steps_per_epoch=0, verbose=0)


def test_checkpoint_every_n_epochs_resumes_from_the_last_written_one(tmp_path):
    x, y = two_task_batch(64)

    def trainer(run_dir=None):
        keras.utils.set_random_seed(0)
        return Trainer(_model(), run_dir=run_dir, checkpoint_every=2, learning_rate=1e-3)

    first = trainer(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):  # stopped in epoch 3, whose checkpoint is not due
        first.fit(x, y, epochs=4, batch_size=32, verbose=0, callbacks=[_Interrupt(3)])
    written = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("ckpt-*.index"))
    assert written == ["ckpt-2.index"]
    resumed = trainer(tmp_path / "run")
    assert resumed.restore() == 2
    history = resumed.fit(x, y, epochs=4, batch_size=32, verbose=0)
    assert len(history.history["loss"]) == 2  # epochs 3 and 4 again
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("ckpt-*.index")) == [
        "ckpt-2.index", "ckpt-4.index"]
    with open(tmp_path / "run" / "history.csv") as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["0", "1", "2", "3"]
    straight = trainer()
    straight.fit(x, y, epochs=4, batch_size=32, verbose=0)
    for a, b in zip(resumed.model.weights, straight.model.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"checkpoint_every=0"):
        Trainer(_model(), checkpoint_every=0)
