"""The speed record's contract: `make bench QUICK=1` writes results.json and results.md
with every key of the record (null only with the reason it is missing)."""

import json

import numpy as np
import pytest

from benchmarks import record


def test_interleaving_alternates_the_order_and_ratio_is_per_round():
    calls = []
    times = record.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b"),
                                "c": lambda: calls.append("c")}, rounds=3)
    assert "".join(calls) == "abc" + "abc" + "bca" + "cab"  # warm-ups, then each in each place
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}
    spread = record.ratio([2.0, 4.0, 3.0], [1.0, 1.0, 2.0])
    assert spread == {"median": 2.0, "min": 1.5, "max": 4.0, "rounds": 3}


def test_timed_epochs_come_from_one_fit_call_after_a_warm_up(monkeypatch):
    import keras

    import zoo
    from training import Trainer

    x = np.random.default_rng(0).random((40, 28, 28, 1)).astype("float32")
    y = {"mnist": np.arange(40) % 10, "shifted": (np.arange(40) + 1) % 10}
    keras.utils.set_random_seed(0)
    trainer = Trainer(zoo.build("hard_sharing", tasks={"mnist": 10, "shifted": 10}, input_shape=(28, 28, 1)))
    calls = []
    fit = trainer.fit
    monkeypatch.setattr(trainer, "fit", lambda *a, **k: calls.append(k["epochs"]) or fit(*a, **k))
    seconds = record.timed_epochs(trainer, x, y, epochs=3, batch=20)
    assert calls == [4] and int(trainer.epoch.numpy()) == 4  # the warm-up and three timed, one call
    assert len(seconds) == 3 and all(s > 0 for s in seconds)


def test_onednn_runtime_is_read_from_the_verbose_header():
    from benchmarks.onednn_primitives import runtime

    header = ("onednn_verbose,v1,info,oneDNN v3.12.0 (commit 80afa71)\n"
              "onednn_verbose,v1,info,cpu,runtime:OpenMP,nthr:2\n"
              "onednn_verbose,v1,info,cpu,isa:Intel AVX-512\n")
    assert runtime(header) == "v3.12.0, runtime:OpenMP,nthr:2"
    assert runtime("no header") == "?, ?"


def test_training_flops_of_a_conv_and_a_dense_layer_follow_the_formula():
    import keras

    inputs = keras.Input((8, 8, 3))
    z = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    out = keras.layers.Dense(5)(keras.layers.Flatten()(z))
    model = keras.Model(inputs, out)
    conv = 2 * 8 * 8 * 4 * 3 * 3 * 3
    dense = 2 * (8 * 8 * 4) * 5
    assert record.training_flops_per_image(model) == 3 * (conv + dense)


@pytest.mark.slow
def test_quick_record_writes_every_key(tmp_path):
    result = record.main(["--quick", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved["metrics"]) == set(record.GOALS)
    for key, value in saved["metrics"].items():
        assert (value is None) == (key in saved["missing"]), key
        assert value is None or np.isfinite(value)
    assert saved["quick"] is True and saved["machine"]["versions"]["tensorflow"]
    # What the ratio depends on from machine to machine: the instruction sets and oneDNN's.
    assert "avx" in saved["machine"]["cpu_flags"] and saved["machine"]["onednn"]["version"].startswith("v")
    table = (tmp_path / "results.md").read_text()
    assert all(f"`{key}`" in table for key in record.GOALS) and "--quick" in table and "oneDNN v" in table
    assert result["metrics"] == saved["metrics"]
    assert {(r["weighting"], r["tasks"], r["batch"]) for r in saved["scaling"]} == {
        (w, t, b) for w in ("equal", "pcgrad") for t in (2, 10) for b in (32, 128)}
    assert all(r["ms_per_step"] > 0 for r in saved["scaling"]) and "Step time (ms)" in table
    assert (tmp_path / "scaling.png").read_bytes()[:4] == b"\x89PNG"
    # The step's profile names where the time goes; the shares of the ops' time add up.
    profile = saved["details"]["train_flops_fraction_of_peak"]["profile"]
    assert set(profile["conv_gflops"]) == {"conv_forward", "conv_input_gradient", "conv_kernel_gradient"}
    assert sum(profile["share_by_kind"].values()) == pytest.approx(1.0, abs=0.01)
    assert "Where the all-conv training step's time goes" in table
