"""SIGKILL at points chosen by a seed; every run started again ends where an
uninterrupted run ends: the same weights and weighting state bit for bit, one history
row per epoch, a complete SavedModel."""

import csv
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

from tests.faults.fault_script import BATCH, EPOCHS, N

ROOT = Path(__file__).resolve().parents[2]
SEED = 20261123
STEPS = N // BATCH


def fault_points(seed=SEED):
    """One point of each kind, epoch and step drawn with `seed`; `step` draws the
    timer's delay in milliseconds."""
    rng = random.Random(seed)
    return [f"batch:{rng.randrange(EPOCHS)}:{rng.randrange(1, STEPS)}",
            f"step:{rng.randrange(EPOCHS)}:{rng.randrange(0, 5)}",
            f"callback:{rng.randrange(EPOCHS)}",
            f"history:{rng.randrange(EPOCHS)}",
            f"checkpoint:{rng.randrange(EPOCHS)}",
            "export"]


def _start(folder, fault=""):
    return subprocess.Popen([sys.executable, "-m", "tests.faults.fault_script", str(folder / "run"),
                             str(folder / "export" / "model"), str(folder / "out.npz"), fault],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_runs_killed_at_seeded_points_resume_to_the_uninterrupted_result(tmp_path):
    points = fault_points()
    assert len(points) >= 5
    reference = _start(tmp_path / "reference")
    folders = {point: tmp_path / point.replace(":", "_") for point in points}
    killed = {point: _start(folder, point) for point, folder in folders.items()}
    for point, process in killed.items():
        _, err = process.communicate(timeout=300)
        assert process.returncode == -signal.SIGKILL, (point, err.decode()[-2000:])
        assert not (folders[point] / "out.npz").exists()
    resumed = {point: _start(folder) for point, folder in folders.items()}
    for process in [reference, *resumed.values()]:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err.decode()[-3000:]
    want = np.load(tmp_path / "reference" / "out.npz")
    x = np.random.default_rng(3).normal(size=(5, 8)).astype("float32")
    served = tf.saved_model.load(str(tmp_path / "reference" / "export" / "model"))
    expected = {k: v.numpy() for k, v in served.signatures["serving_default"](inputs=x).items()}
    for point, folder in folders.items():
        got = np.load(folder / "out.npz")
        assert sorted(got.files) == sorted(want.files)
        for key in want.files:
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{point}: {key}")
        with open(folder / "run" / "history.csv", newline="") as f:
            assert [row["epoch"] for row in csv.DictReader(f)] == [str(e) for e in range(EPOCHS)], point
        loaded = tf.saved_model.load(str(folder / "export" / "model"))
        outputs = loaded.signatures["serving_default"](inputs=x)
        for task, value in expected.items():
            np.testing.assert_array_equal(outputs[task].numpy(), value, err_msg=point)
        # What the killed export left behind was cleared by the finished one.
        assert [p.name for p in (folder / "export").iterdir()] == ["model"], point
