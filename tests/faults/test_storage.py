"""Damaged checkpoints and full disks: detected, reported, nothing earlier lost."""

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import zoo
from training import Trainer

ROOT = Path(__file__).resolve().parents[2]


def _model():
    keras.utils.set_random_seed(0)
    return zoo.build("hard_sharing", tasks={"a": 2, "b": 2}, input_shape=(8,), trunk="dense", units=(16,))


def _data():
    x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
    return x, {"a": (x[:, 0] > 0).astype("int64"), "b": (x[:, 1] > 0).astype("int64")}


class _Snapshot(keras.callbacks.Callback):
    weights = {}

    def on_epoch_end(self, epoch, logs=None):
        self.weights[epoch] = [w.numpy().copy() for w in self.model.weights]


def _damage(folder, how):
    data = next(folder.glob("ckpt-2.data-*"))
    raw = data.read_bytes()
    if how == "truncated":
        data.write_bytes(raw[: len(raw) // 2])
    elif how == "bit flipped":
        data.write_bytes(raw[:100] + bytes([raw[100] ^ 0xFF]) + raw[101:])
    else:
        (folder / "ckpt-2.index").write_bytes(b"not an index")


@pytest.mark.parametrize("how", ["truncated", "bit flipped", "index overwritten"])
def test_a_damaged_latest_checkpoint_is_reported_and_the_one_before_used(tmp_path, how):
    x, y = _data()
    snapshot = _Snapshot()
    Trainer(_model(), run_dir=tmp_path).fit(x, y, epochs=2, batch_size=16, callbacks=[snapshot], verbose=0)
    _damage(tmp_path / "checkpoints", how)
    trainer = Trainer(_model(), run_dir=tmp_path)
    with pytest.warns(UserWarning, match=r"ckpt-2' cannot be read .*trying the one before it"):
        assert trainer.restore() == 1
    for got, want in zip(trainer.model.weights, snapshot.weights[0]):
        np.testing.assert_array_equal(got.numpy(), want)
    # The run goes on from there, and writes a sound checkpoint over the damaged one.
    trainer.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert Trainer(_model(), run_dir=tmp_path).restore() == 2


def test_no_readable_checkpoint_is_an_error_that_names_the_folder(tmp_path):
    x, y = _data()
    Trainer(_model(), run_dir=tmp_path).fit(x, y, epochs=1, batch_size=16, verbose=0)
    (tmp_path / "checkpoints" / "ckpt-1.index").write_bytes(b"")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"No checkpoint of `run_dir` .* can be read"):
        Trainer(_model(), run_dir=tmp_path).restore()


def _namespaces_work():
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _namespaces_work(), reason="needs user and mount namespaces (unshare -rm) "
                                                   "to mount a small tmpfs")
def test_a_full_disk_keeps_the_previous_checkpoint_and_export(tmp_path):
    """A real 4 MB tmpfs, filled after the first checkpoint and after the first export."""
    command = (f"mount -t tmpfs -o size=4m tmpfs {tmp_path} && "
               f"exec {sys.executable} -m tests.faults.disk_script {tmp_path}")
    result = subprocess.run(["unshare", "-rm", "sh", "-c", command], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert "Writing the checkpoint of epoch 2 failed" in report["checkpoint_error"]
    assert "The earlier checkpoints are untouched" in report["checkpoint_error"]
    assert report["restored_epoch"] == 1
    assert not any("ckpt-2" in name for name in report["checkpoint_files"]), report["checkpoint_files"]
    assert "the previous export there is untouched" in report["export_error"]
    assert "No space left on device" in report["export_error"]
    assert report["export_intact"] is True
    assert report["export_leftovers"] == ["model"]
