"""The command line end to end: train, resume, export, predict, and its errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mtl_tf.data import load_numpy


def _cli(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "training.cli", *map(str, args)],
                            capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_train_export_predict(tmp_path):
    run = tmp_path / "run"
    common = ["train", "hard_sharing", "--tasks", "mnist,letters", "--limit", "2000",
              "--batch-size", "64", "--run-dir", run, "--model-option", "trunk=dense"]
    _cli(*common, "--epochs", "1", "--weighting", "uncertainty")
    out = _cli(*common, "--epochs", "2", "--weighting", "uncertainty").stdout
    history = (run / "history.csv").read_text().splitlines()
    assert len(history) == 3  # a header and one row per epoch: the second call resumed
    test = json.loads((run / "test_metrics.json").read_text())
    assert test["mnist_accuracy"] > 0.75 and test["letters_accuracy"] > 0.75
    assert "test:" in out

    # Settings that differ from the run's are refused rather than mixed in.
    clash = _cli(*common, "--epochs", "2", "--weighting", "dwa", check=False)
    assert clash.returncode == 1 and "other settings" in clash.stderr

    saved = tmp_path / "saved"
    _cli("export", run, "--to", saved)
    images, labels = load_numpy("mnist", "test")
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"digit{i}.png")
        Image.fromarray(images[i]).save(paths[-1])
    lines = _cli("predict", saved, *paths).stdout.strip().splitlines()
    predicted = [int(line.split("mnist=")[1].split()[0]) for line in lines]
    assert predicted == labels[:3].tolist()

    again = _cli("export", run, "--to", saved, check=False)
    assert again.returncode == 1 and "overwrite" in again.stderr


@pytest.mark.parametrize("args, message", [
    (["train", "hard_sharing", "--tasks", "mnist,cifar", "--run-dir", "x"], "unknown: ['cifar']"),
    (["train", "hard_sharin", "--run-dir", "x"], "Did you mean 'hard_sharing'"),
    (["train", "hard_sharing", "--weighting", "gradnrom", "--run-dir", "x", "--limit", "10"],
     "Did you mean 'gradnorm'"),
    (["export", "no-such-run", "--to", "y"], "run_dir='no-such-run'"),
    (["train", "hard_sharing", "--sharing", "similarity", "--run-dir", "x", "--limit", "10"],
     "`sharing` merges the branches of the `selective_sharing` model"),
    (["train", "selective_sharing", "--sharing", "closest", "--run-dir", "x", "--limit", "10"],
     "criterion='closest'"),
    (["train", "hard_sharing", "--hierarchy", "fashion_mnist", "--run-dir", "x", "--limit", "10"],
     "model 'hard_sharing' is not one. Received: hierarchy='fashion_mnist'"),
    (["train", "coarse_fine_shared", "--run-dir", "x", "--limit", "10"], "--hierarchy fashion_mnist"),
    (["train", "coarse_fine_shared", "--hierarchy", "fashion", "--run-dir", "x", "--limit", "10"],
     "Did you mean 'fashion_mnist'"),
    (["train", "coarse_fine_shared", "--hierarchy", "pooled", "--tasks", "mnist", "--run-dir", "x"],
     "--tasks and --hierarchy exclude each other"),
])
def test_bad_arguments_are_clear_errors(args, message, tmp_path):
    result = subprocess.run([sys.executable, "-m", "training.cli", *args], capture_output=True,
                            text=True, cwd=tmp_path, timeout=300,
                            env={**__import__("os").environ,
                                 "PYTHONPATH": str(__import__("pathlib").Path(__file__).parents[2])})
    assert result.returncode == 1 and message in result.stderr, result.stderr[-2000:]


def test_saved_model_rejects_a_wrong_input_shape(tmp_path):
    import tensorflow as tf

    import mtl_tf.export
    import zoo

    model = zoo.build("hard_sharing", tasks={"a": 3}, input_shape=(28, 28, 1), trunk="dense",
                      units=(8,))
    serve = tf.saved_model.load(str(mtl_tf.export.save(model, tmp_path / "m"))).signatures[
        "serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"`inputs` must be float32 of shape \(batch, 28, 28, 1\)"):
        serve(inputs=tf.zeros((2, 32, 32, 1)))
    assert np.asarray(serve(inputs=tf.zeros((2, 28, 28, 1)))["a"]).shape == (2, 3)


def test_export_refuses_to_overwrite_and_leaves_no_partial_folder(tmp_path):
    import mtl_tf.export
    import zoo

    model = zoo.build("hard_sharing", tasks={"a": 3}, input_shape=(4,), trunk="dense", units=(8,))
    mtl_tf.export.save(model, tmp_path / "m")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        mtl_tf.export.save(model, tmp_path / "m")
    mtl_tf.export.save(model, tmp_path / "m", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_a_served_model_refuses_bad_inputs_in_a_process_that_never_imported_us(tmp_path):
    import mtl_tf.export
    import zoo
    from tests.helpers import run_python

    model = zoo.build("hard_sharing", tasks={"a": 3}, input_shape=(28, 28, 1), trunk="dense", units=(8,))
    path = mtl_tf.export.save(model, tmp_path / "m", value_range=(0.0, 1.0))
    assert mtl_tf.export.serving_info(path) == {"tasks": ["a"], "input_shape": [28, 28, 1],
                                                "value_range": [0.0, 1.0]}
    out = run_python(f"""
        import sys, numpy as np, tensorflow as tf
        serve = tf.saved_model.load({str(path)!r}).signatures["serving_default"]
        cases = {{"shape": np.zeros((2, 32, 32, 1), np.float32), "range": np.full((2, 28, 28, 1), 255.0, np.float32),
                  "nan": np.full((1, 28, 28, 1), np.nan, np.float32), "ok": np.full((2, 28, 28, 1), 0.5, np.float32)}}
        for name, x in cases.items():
            try:
                print(name, "->", serve(inputs=tf.constant(x))["a"].shape)
            except tf.errors.InvalidArgumentError as error:
                print(name, "->", error.message.splitlines()[0])
        with tf.compat.v1.Session(graph=tf.Graph()) as session:
            signature = tf.compat.v1.saved_model.loader.load(session, ["serve"], {str(path)!r}).signature_def["serving_default"]
            try:
                session.run(signature.outputs["a"].name, {{signature.inputs["inputs"].name: cases["range"]}})
            except tf.errors.InvalidArgumentError as error:
                print("tf1 ->", " ".join(error.message.split()))
        assert not any(m.startswith(("mtl_tf", "zoo", "training")) for m in sys.modules)
    """)
    lines = dict(line.split(" -> ", 1) for line in out.strip().splitlines())
    assert "`inputs` must be float32 of shape (batch, 28, 28, 1)" in lines["shape"]
    for case in ("range", "nan", "tf1"):
        assert "`inputs` must lie in [0.0, 1.0], the range this model was trained on" in lines[case], lines
    assert lines["range"].endswith("255 255") or "255" in lines["range"]
    assert lines["ok"] == "(2, 3)"


def test_predict_refuses_what_it_cannot_read(tmp_path):
    import mtl_tf.export
    import zoo

    pairs = mtl_tf.export.save(zoo.build("siamese", pipe="shallow"), tmp_path / "pairs")
    digits = mtl_tf.export.save(zoo.build("hard_sharing", tasks={"a": 3}, input_shape=(28, 28, 1),
                                          trunk="dense", units=(8,)), tmp_path / "digits")
    (tmp_path / "notes.png").write_text("not an image")
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "ok.png")
    for args, message in [
        (["predict", tmp_path / "missing", tmp_path / "ok.png"], "is not a SavedModel folder"),
        (["predict", pairs, tmp_path / "ok.png"], "takes inputs of shape (2, 14, 14), not images"),
        (["predict", digits, tmp_path / "notes.png"], "is not an image file Pillow can read"),
    ]:
        result = _cli(*args, check=False)
        assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr, \
            result.stderr[-2000:]


# The loss-level case is also covered by test_trainer's two-worker test: slow here.
@pytest.mark.parametrize("weighting", [pytest.param("uncertainty", marks=pytest.mark.slow), "pcgrad"])
def test_train_with_two_workers_matches_one_process(weighting, tmp_path):
    """`--workers 2`: two processes of one MultiWorkerMirroredStrategy cluster on
    loopback, a loss-level and a gradient-level strategy, end where one process ends."""
    from training.run import restore_model

    common = ["train", "hard_sharing", "--tasks", "mnist,letters", "--limit", "600", "--batch-size", "64",
              "--epochs", "2", "--weighting", weighting, "--model-option", "trunk=dense"]
    two = _cli(*common, "--run-dir", tmp_path / "two", "--workers", "2")
    _cli(*common, "--run-dir", tmp_path / "one")
    assert "worker 0 is the chief" in two.stdout and "test:" in two.stdout
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [
        "checkpoints", "config.json", "history.csv", "tensorboard", "test_metrics.json", "trainer.json"]
    for got, want in zip(restore_model(tmp_path / "two").weights, restore_model(tmp_path / "one").weights):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=2e-3, atol=2e-4, err_msg=got.path)


def test_train_with_selective_sharing_then_export_the_merged_model(tmp_path):
    from training import run as run_module
    from zoo.selective_sharing import groups_of, normalize_groups

    run = tmp_path / "run"
    tasks = ["mnist", "fashion_mnist", "letters"]
    _cli("train", "selective_sharing", "--tasks", ",".join(tasks), "--sharing", "similarity",
         "--limit", "600", "--epochs", "2", "--batch-size", "64", "--run-dir", run,
         "--model-option", "trunk=dense", "--model-option", "shared_units=32",
         "--model-option", "branch_units=[16,8]")
    header = (run / "history.csv").read_text().splitlines()[0].split(",")
    assert {"branches", "params", "sharing_decomposition_seconds"} <= set(header)
    state = json.loads((run / "selective_sharing.json").read_text())
    assert [r["epoch"] for r in state["rows"]][:1] == [1]
    model = run_module.restore_model(run)
    assert groups_of(model) == normalize_groups(state["rows"][-1]["groups"], tasks)
    _cli("export", run, "--to", tmp_path / "saved")
    assert (tmp_path / "saved" / "saved_model.pb").is_file()


@pytest.mark.slow
def test_train_a_coarse_fine_net_on_a_hierarchy_then_resume_and_export(tmp_path):
    """`--hierarchy`: the run's tasks are fine and coarse with the data set's class counts,
    the run resumes, and the export answers both with the fine class under its coarse one."""
    import tensorflow as tf

    from mtl_tf.data.hierarchy import fashion_coarse_labels

    run = tmp_path / "run"
    common = ["train", "coarse_fine_reuse_coarse", "--hierarchy", "fashion_mnist", "--limit", "3000",
              "--batch-size", "64", "--run-dir", run, "--model-option", "conv_filters=[[8],[16]]",
              "--model-option", "head_units=[64,32]", "--model-option", "reuse_after=1",
              "--model-option", "batch_norm_momentum=0.9"]
    _cli(*common, "--epochs", "1")
    _cli(*common, "--epochs", "2")
    config = json.loads((run / "config.json").read_text())
    assert config["tasks"] == ["fine", "coarse"] and config["classes"] == {"fine": 10, "coarse": 4}
    assert len((run / "history.csv").read_text().splitlines()) == 3  # resumed, not restarted
    test = json.loads((run / "test_metrics.json").read_text())
    assert test["fine_accuracy"] > 0.5 and test["coarse_accuracy"] > 0.7  # chance: 0.1 and about 0.3
    _cli("export", run, "--to", tmp_path / "saved")
    images, labels = load_numpy("fashion_mnist", "test")
    served = tf.saved_model.load(str(tmp_path / "saved"))
    out = served.signatures["serving_default"](tf.constant(images[:200, ..., None] / 255.0, tf.float32))
    fine = np.argmax(out["fine"].numpy(), axis=1)
    coarse = np.argmax(out["coarse"].numpy(), axis=1)
    assert out["fine"].shape == (200, 10) and out["coarse"].shape == (200, 4)
    assert np.mean(fine == labels[:200]) > 0.5
    assert np.mean(fashion_coarse_labels(fine) == coarse) > 0.7  # the two heads mostly agree
