"""A user's own .npz for `mtl-tf train --data`: the tasks and input shape read off the
arrays, a run that learns, resumes and exports with outputs named by task; every bad
file refused by name before anything is written."""

import json

import numpy as np
import pytest

from tests.training.test_cli import _main
from training.user_data import load_npz

RNG = np.random.default_rng(21)
N = 600
X = RNG.normal(size=(N, 12)).astype("float32")
PRICE = (2 * X[:, 0] + X[:, 1]).astype("float32")
PRICE[:50] = np.nan
CHURN = (X[:, 2] + X[:, 0] > 0).astype("int64")
CHURN[50:120] = -1
SIZE = np.stack([X[:, 3], -X[:, 4]], axis=1).astype("float32")


def test_the_tasks_and_the_test_split_are_read_off_the_arrays(tmp_path):
    path = tmp_path / "own.npz"
    np.savez(path, x=X[:500], price=PRICE[:500], churn=CHURN[:500] + 2 * (CHURN[:500] > 0), size=SIZE[:500],
             x_test=X[500:], price_test=PRICE[500:], churn_test=CHURN[500:], size_test=SIZE[500:])
    (x, y), (x_test, y_test), tasks = load_npz(path)
    kinds = {t.name: (t.kind, t.num_outputs) for t in tasks}
    assert kinds == {"price": ("regression", 1), "churn": ("multiclass", 4), "size": ("regression", 2)}
    np.testing.assert_array_equal(x, X[:500])
    np.testing.assert_array_equal(y["churn"][:60], (CHURN[:60] + 2 * (CHURN[:60] > 0)))
    assert np.isnan(y["price"][:50]).all() and y["size"].shape == (500, 2)
    assert x_test.shape == (100, 12) and y_test["churn"].dtype == np.int64


@pytest.mark.parametrize("arrays, message", [
    ({"churn": CHURN}, r"no array `x`"),
    ({"x": X}, r"no label array"),
    ({"x": X, "churn": np.array([{"a": 1}] * N, dtype=object)}, r"array 'churn' holds Python objects"),
    ({"x": X, "churn": CHURN[:10]}, r"labels `churn` hold 10 examples for 600 inputs"),
    ({"x": X, "churn": CHURN - 3}, r"labels `churn` must be classes 0, 1, \.\.\. or -1 \(no label\)\. Found -4"),
    ({"x": X, "churn": -np.ones(N, "int64")}, r"`churn` mark every example -1"),
    ({"x": X, "price": np.full(N, np.nan, "float32")}, r"targets `price` are NaN .* for every example"),
    ({"x": np.where(np.arange(N)[:, None] == 7, np.nan, X), "churn": CHURN}, r"`x` holds NaN .* \(at example 7\)"),
    ({"x": X[:, 0], "churn": CHURN}, r"`x` must be a numeric array of shape \(examples, \.\.\.\)"),
    ({"x": X, "churn": CHURN, "x_test": X[:5]}, r"has `x_test` but not \['churn_test'\]"),
    ({"x": X, "churn": CHURN, "x_test": X[:5], "churn_test": np.full(5, 9)}, r"`churn_test` has class 9"),
    ({"x": X, "churn": CHURN, "x_test": X[:5], "churn_test": PRICE[100:105]}, r"`churn_test` holds regression"),
    ({"x": X, "note": np.array(["a"] * N)}, r"labels `note` must be integers .* or floats"),
])
def test_a_bad_file_is_refused_naming_the_key_and_the_value(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=message):
        load_npz(path)


def test_a_file_that_is_not_an_npz_is_refused(tmp_path):
    (tmp_path / "x.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable .npz file"):
        load_npz(tmp_path / "x.npz")
    with pytest.raises(ValueError, match="no such file"):
        load_npz(tmp_path / "missing.npz")


def test_train_on_your_own_npz_resumes_and_exports_with_outputs_named_by_task(tmp_path, monkeypatch, capsys):
    from tests.helpers import run_python

    path, run = tmp_path / "own.npz", tmp_path / "run"
    np.savez(path, x=X[:500], price=PRICE[:500], churn=CHURN[:500], x_test=X[500:], price_test=PRICE[500:],
             churn_test=CHURN[500:])
    common = ["train", "hard_sharing", "--data", path, "--model-option", "trunk=dense", "--run-dir", run,
              "--weighting", "pcgrad", "--batch-size", "32", "--lr", "0.01"]
    code, err, out = _main([*common, "--epochs", "2"], tmp_path, monkeypatch, capsys)
    assert code == 0, err[-3000:]
    code, err, out = _main([*common, "--epochs", "4"], tmp_path, monkeypatch, capsys)  # resumed: 2 more
    assert code == 0, err[-3000:]
    assert len((run / "history.csv").read_text().splitlines()) == 5
    test = json.loads((run / "test_metrics.json").read_text())
    assert test["churn_accuracy"] > 0.7 and test["price_mse"] < 2.0  # the targets' variance is 5
    config = json.loads((run / "config.json").read_text())
    assert config["input_shape"] == [12] and [t["kind"] for t in config["task_specs"]] == ["regression", "multiclass"]
    code, err, _ = _main(["export", run, "--to", tmp_path / "saved"], tmp_path, monkeypatch, capsys)
    assert code == 0, err[-3000:]
    np.save(tmp_path / "x.npy", X[:4] * 10)  # no value range: inputs of any scale are served
    out = run_python(f"""
        import json, numpy as np, tensorflow as tf
        served = tf.saved_model.load({str(tmp_path / "saved")!r}).signatures["serving_default"]
        out = served(inputs=tf.constant(np.load({str(tmp_path / "x.npy")!r})))
        print(json.dumps({{k: list(v.shape) for k, v in out.items()}}))
    """)
    assert json.loads(out.strip().splitlines()[-1]) == {"churn": [4, 2], "price": [4, 1]}
    # No test split: said, and no test metrics written.
    np.savez(path, x=X, churn=CHURN)
    code, _, out = _main(["train", "hard_sharing", "--data", path, "--model-option", "trunk=dense", "--run-dir",
                          tmp_path / "no_test", "--epochs", "1"], tmp_path, monkeypatch, capsys)
    assert code == 0 and "no test split" in out and not (tmp_path / "no_test" / "test_metrics.json").exists()
    # A bad file: refused, and the run folder is not created.
    np.savez(path, x=X, churn=CHURN[:5])
    code, err, _ = _main(["train", "hard_sharing", "--data", path, "--run-dir", tmp_path / "bad"], tmp_path,
                         monkeypatch, capsys)
    assert code != 0 and "hold 5 examples for 600 inputs" in err and not (tmp_path / "bad").exists()
    code, err, _ = _main(["train", "hard_sharing", "--data", path, "--tasks", "mnist", "--run-dir", tmp_path / "b"],
                         tmp_path, monkeypatch, capsys)
    assert code != 0 and "excludes --tasks" in err


@pytest.mark.slow
def test_tune_searches_on_your_own_npz_and_exports_the_best(tmp_path, monkeypatch, capsys):
    path = tmp_path / "own.npz"
    np.savez(path, x=X, price=PRICE, churn=CHURN)
    code, err, out = _main(["tune", "hard_sharing", "--data", path, "--max-trials", "2", "--epochs", "1",
                            "--objective", "val_mean_loss", "--directory", tmp_path / "search",
                            "--export", tmp_path / "best"], tmp_path, monkeypatch, capsys)
    assert code == 0, err[-3000:]
    settings = json.loads((tmp_path / "search" / "hard_sharing" / "search.json").read_text())
    assert settings["tasks"] == ["price", "churn"] and settings["data"] == str(path.resolve())
    assert (tmp_path / "best" / "saved_model.pb").is_file()
    code, err, _ = _main(["tune", "siamese", "--data", path, "--directory", tmp_path / "s"], tmp_path,
                         monkeypatch, capsys)
    assert code != 0 and "Families that take any tasks" in err


def test_train_on_a_tfds_data_set_with_the_features_named(tmp_path, monkeypatch, capsys):
    """Paper 003's pairs as the project's TFDS builder has them (prepared from the local
    files on first use, into TFDS_DATA_DIR): the input feature and two label features."""
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    run = tmp_path / "run"
    code, err, out = _main(["train", "hard_sharing", "--data", "tfds:mtl_mnist_pairs", "--input-key", "image",
                            "--task-keys", "compare,digit_a", "--model-option", "trunk=dense", "--epochs", "2",
                            "--run-dir", run], tmp_path, monkeypatch, capsys)
    assert code == 0, err[-3000:]
    config = json.loads((run / "config.json").read_text())
    assert config["input_shape"] == [2, 14, 14] and config["tasks"] == ["compare", "digit_a"]
    assert config["data_keys"] == {"input": "image", "tasks": ["compare", "digit_a"]}
    test = json.loads((run / "test_metrics.json").read_text())
    assert test["digit_a_accuracy"] > 0.3  # 10 classes, 900 pairs, 2 epochs
    for args, message in [(["--data", "tfds:no_such_set"], "no TFDS data set of that name"),
                          (["--data", "tfds:mtl_mnist_pairs", "--input-key", "pixels"], "no feature 'pixels'"),
                          (["--data", "tfds:mtl_mnist_pairs", "--task-keys", "label"], "task keys ['label']")]:
        code, err, _ = _main(["train", "hard_sharing", *args, "--run-dir", tmp_path / "bad"], tmp_path,
                             monkeypatch, capsys)
        assert code != 0 and message in err, err
    assert not (tmp_path / "bad").exists()
