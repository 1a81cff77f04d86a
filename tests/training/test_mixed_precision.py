"""Every kind of weighting strategy under `mixed_bfloat16` and `mixed_float16` (with a
LossScaleOptimizer): one step's update, the combined gradient, matches float32's within
the policy's precision (the Trainer's, and Keras's fit on a MultiTaskModel), and a short
run learns; a loss scale that overflows skips steps
(reported, the strategy's state untouched) instead of stopping the run. Each policy runs
in a process of its own (the policy is global)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# A Gram solver with and without state, per-weight state, a split batch, a second
# forward pass, a random stream, loss-level ones with a trainable and with a history.
STRATEGIES = ["equal", "uncertainty", "dwa", "pcgrad", "mgda", "nash_mtl", "gradvac", "modo", "famo",
              "graddrop"]


def _run(tmp_path, policy, strategies, *extra):
    out = tmp_path / f"{policy}.npz"
    result = subprocess.run([sys.executable, "-m", "tests.training.mixed_precision_script", str(out), policy,
                             json.dumps(strategies), *extra], cwd=Path(__file__).resolve().parents[2],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return {k.replace("__", "/"): v for k, v in np.load(out).items()}


@pytest.mark.parametrize("policy", ["mixed_float16", pytest.param("mixed_bfloat16", marks=pytest.mark.slow)])
def test_every_kind_of_strategy_steps_as_in_float32_and_learns(tmp_path, policy):
    strategies = STRATEGIES if policy == "mixed_bfloat16" else ["pcgrad", "nash_mtl"]
    got = _run(tmp_path, policy, strategies, "overflow" if policy == "mixed_float16" else "")
    tolerance = 0.01 if policy == "mixed_float16" else 0.05  # 11 and 8 significant bits
    for name in strategies:
        want, step = got[f"{name}/float32/step"], got[f"{name}/{policy}/step"]
        assert np.abs(want).max() > 1e-3, name  # it moved
        assert np.abs(step - want).max() <= tolerance * np.abs(want).max(), (name, np.abs(step - want).max())
        loss, reference = got[f"{name}/{policy}/loss"], got[f"{name}/float32/loss"]
        assert loss[-1] < 0.9 * loss[0] and abs(loss[-1] - reference[-1]) <= 0.1 * reference[-1], (
            name, loss, reference)
    want, step = got["keras/float32/step"], got[f"keras/{policy}/step"]  # Keras's fit on a MultiTaskModel
    assert np.abs(step - want).max() <= tolerance * np.abs(want).max()
    assert ("skipped_steps" in got[f"keras/{policy}/logged"]) == (policy == "mixed_float16")
    if policy == "mixed_float16":
        skipped, loss = got["overflow/skipped"], got["overflow/loss"]
        assert skipped[0] > 0 and skipped[-1] == 0, skipped  # 2^24 halves until it fits
        assert float(got["overflow/scale"]) < 2.0 ** 20 and bool(got["overflow/state_finite"])
        assert np.isfinite(loss).all() and loss[-1] < loss[0]
