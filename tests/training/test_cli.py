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


def test_train_export_predict(tmp_path, monkeypatch, capsys):
    """The command line's whole path in this process (the same `main`; the console script
    itself is run by the tests below): train, resume, refuse a clash, export, predict."""
    run = tmp_path / "run"
    common = ["train", "hard_sharing", "--tasks", "mnist,letters", "--limit", "2000",
              "--batch-size", "64", "--run-dir", run, "--model-option", "trunk=dense"]

    def cli(*args, code=0):
        got, err, out = _main(args, tmp_path, monkeypatch, capsys)
        assert got == code, err[-3000:]
        return err if code else out

    cli(*common, "--epochs", "1", "--weighting", "uncertainty")
    _cli(*common, "--epochs", "2", "--weighting", "uncertainty")  # the console script resumes it
    history = (run / "history.csv").read_text().splitlines()
    assert len(history) == 3  # a header and one row per epoch: the second call resumed
    test = json.loads((run / "test_metrics.json").read_text())
    assert test["mnist_accuracy"] > 0.75 and test["letters_accuracy"] > 0.75

    # Settings that differ from the run's are refused rather than mixed in.
    assert "other settings" in cli(*common, "--epochs", "2", "--weighting", "dwa", code=1)

    saved = tmp_path / "saved"
    cli("export", run, "--to", saved)
    images, labels = load_numpy("mnist", "test")
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"digit{i}.png")
        Image.fromarray(images[i]).save(paths[-1])
    lines = cli("predict", saved, *paths).strip().splitlines()
    predicted = [int(line.split("mnist=")[1].split()[0]) for line in lines]
    assert predicted == labels[:3].tolist()
    assert "overwrite" in cli("export", run, "--to", saved, code=1)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("mine")
    assert "is not a SavedModel folder: refusing to replace it" in cli(
        "export", run, "--to", tmp_path / "notes", "--overwrite", code=1)
    assert (tmp_path / "notes" / "mine.txt").read_text() == "mine"


def _main(args, tmp_path, monkeypatch, capsys):
    """`mtl-tf ARGS` in this process (an error needs no TensorFlow start-up of its own), in
    `tmp_path`: the exit code, what it printed on stderr and on stdout."""
    from training.cli import main

    monkeypatch.chdir(tmp_path)
    try:
        code = main([str(a) for a in args])
    except SystemExit as exit:  # argparse's usage errors
        code = exit.code
    printed = capsys.readouterr()
    return code, printed.err, printed.out


_TRAIN = ["train", "hard_sharing", "--run-dir", "x", "--limit", "10"]


@pytest.mark.parametrize("args, message", [
    (["train", "hard_sharing", "--tasks", "mnist,cifar", "--run-dir", "x"], "unknown: ['cifar']"),
    (["train", "hard_sharin", "--run-dir", "x"], "Did you mean 'hard_sharing'"),
    ([*_TRAIN, "--weighting", "gradnrom"], "Did you mean 'gradnorm'"),
    (["export", "no-such-run", "--to", "y"], "run_dir='no-such-run'"),
    ([*_TRAIN, "--sharing", "similarity"], "`sharing` merges the branches of the `selective_sharing` model"),
    (["train", "selective_sharing", "--sharing", "closest", "--run-dir", "x", "--limit", "10"],
     "criterion='closest'"),
    ([*_TRAIN, "--hierarchy", "fashion_mnist"], "model 'hard_sharing' is not one. Received: hierarchy='fashion_mnist'"),
    (["train", "coarse_fine_shared", "--run-dir", "x", "--limit", "10"], "--hierarchy fashion_mnist"),
    (["train", "coarse_fine_shared", "--hierarchy", "fashion", "--run-dir", "x", "--limit", "10"],
     "Did you mean 'fashion_mnist'"),
    (["train", "coarse_fine_shared", "--hierarchy", "pooled", "--tasks", "mnist", "--run-dir", "x"],
     "--tasks and --hierarchy exclude each other"),
    ([*_TRAIN, "--model-option", "nonsense=3"], "Model 'hard_sharing' has no argument 'nonsense'. Its arguments: ["),
    ([*_TRAIN, "--weighting", "dwa", "--weighting-option", "temp=2"],
     "Weighting strategy 'dwa' has no argument 'temp'. Its arguments: ['temperature']"),
    (["tune", "hard_sharing", "--weightings", "equal", "--directory", "t", "--export", "."],
     "`export` exists and is not a SavedModel folder"),
])
def test_bad_arguments_are_clear_errors(args, message, tmp_path, monkeypatch, capsys):
    code, err, _ = _main(args, tmp_path, monkeypatch, capsys)
    assert code == 1 and message in err, err[-2000:]
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize("option, values, message", [
    ("--lr", ["nan", "inf", "-inf", "0", "-0.1", "fast"], "must be a finite number > 0"),
    ("--limit", ["-5", "0", "1.5"], "must be an integer >= 1"),
    ("--epochs", ["0", "-1", "two"], "must be an integer >= 1"),
    ("--batch-size", ["0", "-64"], "must be an integer >= 1"),
    ("--seed", ["-1", "4294967296", "nan"], "must be an integer >= 0 and <= 4294967295"),
    ("--workers", ["-1"], "must be an integer >= 0"),
    ("--tasks", ["mnist,mnist", "mnist,,letters"], "--tasks"),
])
def test_bad_train_values_are_refused_before_anything_starts(option, values, message, tmp_path,
                                                             monkeypatch, capsys):
    for value in values:
        code, err, _ = _main(["train", "hard_sharing", "--run-dir", "x", f"{option}={value}"], tmp_path,
                          monkeypatch, capsys)
        last = err.strip().splitlines()[-1]
        assert code == 2 and f"argument {option}: " in last and message in err and repr(value) in last, err
        assert list(tmp_path.iterdir()) == []


def test_bad_tune_and_reproduce_values_are_refused(tmp_path, monkeypatch, capsys):
    for args, message in [
        (["tune", "hard_sharing", "--max-trials", "0"], "argument --max-trials: must be an integer >= 1. Received: '0'"),
        (["tune", "hard_sharing", "--limit", "-5"], "argument --limit: must be a positive integer or 'all'. Received: '-5'"),
        (["tune", "hard_sharing", "--limit", "0"], "argument --limit: must be a positive integer or 'all'. Received: '0'"),
        (["tune", "hard_sharing", "--epochs", "0"], "argument --epochs: must be an integer >= 1"),
        (["tune", "hard_sharing", "--tasks", "mnist,mnist"], "names a task more than once (mnist)"),
        (["reproduce", "siamese", "--runs", "0"], "argument --runs: must be an integer >= 1"),
        (["reproduce", "siamese", "--seed", "-3"], "argument --seed: must be an integer >= 0"),
    ]:
        code, err, _ = _main(args, tmp_path, monkeypatch, capsys)
        assert code == 2 and message in err.strip().splitlines()[-1], err
    assert list(tmp_path.iterdir()) == []


def test_folders_that_are_files_or_hold_other_files_are_refused(tmp_path, monkeypatch, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "documents").mkdir()
    (tmp_path / "documents" / "letter.txt").write_text("mine")
    for args, message in [
        (["train", "hard_sharing", "--limit", "10", "--run-dir", "notes.txt"], "`run_dir` names a file"),
        (["train", "hard_sharing", "--limit", "10", "--run-dir", "documents"],
         "is a folder of other files (no config.json"),
        (["reproduce", "siamese", "--out", "notes.txt"], "`--out` names a file, not a folder"),
        (["reproduce", "siamese", "--out", "documents", "--no-records"],
         "`--out` 'documents' holds other files (no manifest.json of a reproduction)"),
        (["tune", "hard_sharing", "--directory", "notes.txt"], "`--directory` names a file"),
        (["reproduce", "siamese", "--jobs", "2"], "`--jobs` is for reproductions whose runs train side by side"),
        (["data", "demo", "--out", "notes.txt"], "`--out` names a file"),
    ]:
        code, err, _ = _main(args, tmp_path, monkeypatch, capsys)
        assert code == 1 and message in err, err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["documents", "letter.txt", "notes.txt"]


def test_a_second_run_on_a_busy_run_dir_is_refused_and_a_killed_run_resumes(tmp_path, monkeypatch, capsys):
    """The run directory's lock: a second process is refused while the first holds it and
    writes nothing; once the first is killed (SIGKILL: no clean-up) the run resumes."""
    import os
    import signal
    import time

    run = tmp_path / "run"
    common = ["train", "hard_sharing", "--tasks", "mnist", "--limit", "300", "--batch-size", "30",
              "--model-option", "trunk=dense", "--model-option", "units=[16]", "--run-dir", run]
    first = subprocess.Popen([sys.executable, "-m", "training.cli", *map(str, common), "--epochs", "10000"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not list((run / "checkpoints").glob("ckpt-*.index")):  # an epoch is done
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read().decode()[-2000:]
            time.sleep(0.2)
        os.kill(first.pid, signal.SIGSTOP)  # holds the lock, writes nothing meanwhile
        before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
        # The second run in this process: flock locks belong to open files, not processes.
        code, err, _ = _main([*common, "--epochs", "2"], tmp_path, monkeypatch, capsys)
        assert code == 1 and f"is in use by another process (pid {first.pid})" in err, err
        assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before
    finally:
        first.kill()
        first.wait()
    done = len((run / "history.csv").read_text().splitlines()) - 1
    code, err, _ = _main([*common, "--epochs", done + 1], tmp_path, monkeypatch, capsys)
    assert code == 0, err[-3000:]
    assert len((run / "history.csv").read_text().splitlines()) == 1 + done + 1
    assert not (run / ".lock").exists()


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


def test_predict_refuses_what_it_cannot_read(tmp_path, monkeypatch, capsys):
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
        code, err, _ = _main(args, tmp_path, monkeypatch, capsys)
        assert code == 1 and message in err, err[-2000:]
    # The console script itself: one line, no traceback.
    result = _cli("predict", digits, tmp_path / "notes.png", check=False)
    assert result.returncode == 1 and result.stderr.strip().splitlines() == [
        f"mtl-tf: error: `IMAGE` {str(tmp_path / 'notes.png')!r} is not an image file Pillow can read "
        f"(cannot identify image file {str(tmp_path / 'notes.png')!r})."], result.stderr[-2000:]


# Slow: test_trainer's and test_step_reference's two-worker tests cover the same cluster
# and step in the default suite (the suite ran over 10 minutes).
@pytest.mark.slow
@pytest.mark.parametrize("weighting", ["uncertainty", "mgda"])
def test_train_with_two_workers_matches_one_process(weighting, tmp_path):
    """`--workers 2`: two processes of one MultiWorkerMirroredStrategy cluster on loopback
    end where one process ends: every variable within 1% of the distance training moved it.

    Why that tolerance, not elementwise equality: the two sum in another order, and over 34
    steps a rounding difference can flip a discontinuity (a ReLU, a projection's sign) and
    grow; PCGrad once left 26 of 100,352 kernel entries up to 1.2e-3 apart. Measured here:
    2e-7 of the distance (MGDA, 2 epochs); the same run combining each worker's own Gram
    matrix instead of their sum, 0.039 to 0.10. MGDA, because with these tasks' disjoint
    examples the Gram matrix is diagonal: PCGrad never projects, MGDA's weights are its
    diagonal, the sum over workers."""
    import keras

    from training.run import build_model, restore_model

    common = ["train", "hard_sharing", "--tasks", "mnist,letters", "--limit", "600", "--batch-size", "64",
              "--epochs", "2", "--weighting", weighting, "--model-option", "trunk=dense"]
    two = _cli(*common, "--run-dir", tmp_path / "two", "--workers", "2")
    _cli(*common, "--run-dir", tmp_path / "one")
    assert "worker 0 is the chief" in two.stdout and "test:" in two.stdout
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [
        "checkpoints", "config.json", "history.csv", "tensorboard", "test_metrics.json", "trainer.json"]
    keras.utils.set_random_seed(0)  # the runs' seed: their initial weights
    start = build_model(json.loads((tmp_path / "one" / "config.json").read_text()))
    one, two = restore_model(tmp_path / "one"), restore_model(tmp_path / "two")
    for got, want, initial in zip(two.weights, one.weights, start.weights):
        moved = np.linalg.norm(want.numpy() - initial.numpy())
        assert moved > 0 and np.linalg.norm(got.numpy() - want.numpy()) < 1e-2 * moved, got.path


def test_train_with_selective_sharing_then_export_the_merged_model(tmp_path, monkeypatch, capsys):
    from training import run as run_module
    from zoo.selective_sharing import groups_of, normalize_groups

    run = tmp_path / "run"
    tasks = ["mnist", "fashion_mnist", "letters"]
    code, err, _ = _main(["train", "selective_sharing", "--tasks", ",".join(tasks), "--sharing", "similarity",
                          "--limit", "600", "--epochs", "2", "--batch-size", "64", "--run-dir", run,
                          "--model-option", "trunk=dense", "--model-option", "shared_units=32",
                          "--model-option", "branch_units=[16,8]"], tmp_path, monkeypatch, capsys)
    assert code == 0, err[-3000:]
    header = (run / "history.csv").read_text().splitlines()[0].split(",")
    assert {"branches", "params", "sharing_decomposition_seconds"} <= set(header)
    state = json.loads((run / "selective_sharing.json").read_text())
    assert [r["epoch"] for r in state["rows"]][:1] == [1]
    model = run_module.restore_model(run)
    assert groups_of(model) == normalize_groups(state["rows"][-1]["groups"], tasks)
    assert _main(["export", run, "--to", tmp_path / "saved"], tmp_path, monkeypatch, capsys)[0] == 0
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


def test_a_learning_to_branch_search_writes_its_tree_and_the_tree_trains_alone(tmp_path, monkeypatch, capsys):
    search, kept = tmp_path / "search", tmp_path / "kept"
    common = ["--tasks", "mnist,fashion_mnist", "--limit", "2000", "--batch-size", "64", "--epochs", "3",
              "--model-option", "network=dense", "--model-option", "units=[32,16]"]
    code, err, out = _main(["train", "learning_to_branch", "--run-dir", search, *common], tmp_path, monkeypatch,
                           capsys)
    assert code == 0, err[-3000:]
    assert "most probable tree" in out
    tree = json.loads((search / "tree.json").read_text())
    assert sorted(tree) == ["fashion_mnist", "mnist"] and all(len(p) == 2 for p in tree.values())
    history = (search / "history.csv").read_text().splitlines()
    assert "temperature" in history[0] and len(history) == 4
    code, err, _ = _main(["train", "learning_to_branch", "--run-dir", kept, *common, "--model-option",
                          f"tree={json.dumps(tree)}"], tmp_path, monkeypatch, capsys)
    assert code == 0, err[-3000:]
    assert not (kept / "tree.json").exists()  # a kept tree has nothing left to search
    assert json.loads((kept / "test_metrics.json").read_text())["mnist_accuracy"] > 0.5
