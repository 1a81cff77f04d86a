"""The reproduction command's contract: results.json, report.md, figures, resume."""

import json

import numpy as np
import pytest

from training import reproduce
from training.reproduce import siamese


@pytest.fixture
def tiny_profile(monkeypatch):
    monkeypatch.setitem(siamese.PROFILES, "quick", {"runs": 1, "epochs": 2})


ONLY = ["shallow fc none", "shallow fc ws+al uncertainty"]


def test_siamese_writes_the_contract_files_and_resumes(tiny_profile, tmp_path):
    lines = []
    results = siamese.reproduce("quick", tmp_path, only=ONLY, log=lines.append)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == results
    assert {"paper", "name", "profile", "device", "wall_seconds", "rows"} <= set(saved)
    assert saved["paper"] == "003_f22ced5441240016.txt" and saved["profile"] == "quick"
    rows = {(r["setting"], r["metric"]): r for r in saved["rows"]}
    assert len(rows) == 4 * 18  # every setting's four metrics, measured or not
    base = rows[("shallow fc none", "test_accuracy_mean_curve")]
    assert base["paper"] == 0.8205 and base["runs"] == 1 and 0.55 < base["ours"] <= 1.0
    assert rows[("shallow fc none", "test_accuracy_best_epoch")]["paper"] is None
    assert rows[("shallow fc ws+al uncertainty", "test_accuracy")]["paper"] is None
    assert rows[("convnet ws+al", "test_accuracy_best_epoch")]["ours"] is None
    report = (tmp_path / "report.md").read_text()
    assert "Partial" in report and "convnet ws+al" in report and "0.8205" in report
    assert "raw 0..255 pixels" in report and "in the training set order, every epoch" in report
    record = json.loads((tmp_path / "runs" / "shallow_fc_none" / "run-00.json").read_text())
    curve = record["test_curve_authors"]  # from the untrained net, before each epoch's training
    assert len(curve) == 2 and curve[1] == pytest.approx(record["history"]["test_compare_accuracy"][0], abs=1e-4)
    assert (tmp_path / "histories.png").read_bytes()[:4] == b"\x89PNG"
    run_file = tmp_path / "runs" / "shallow_fc_none" / "run-00.json"
    first = run_file.read_text()
    assert sum("run 1/1" in line for line in lines) == 2

    # Started again with the same arguments, it trains nothing and reports the same runs.
    lines.clear()
    again = siamese.reproduce("quick", tmp_path, only=ONLY, log=lines.append)
    assert not any("run 1/1" in line for line in lines)
    assert run_file.read_text() == first
    assert [r["ours"] for r in again["rows"]] == [r["ours"] for r in results["rows"]]
    assert len(json.loads((tmp_path / "manifest.json").read_text())["sittings"]) == 1  # it trained nothing

    # Another protocol in the same folder is refused, not mixed in.
    with pytest.raises(ValueError, match=r"`--out`.*seed"):
        siamese.reproduce("quick", tmp_path, seed=1, only=ONLY, log=lines.append)


@pytest.mark.parametrize("kwargs, message", [
    ({"profile": "medium"}, r"profile='medium'"),
    ({"profile": "quick", "runs": 0}, r"runs=0"),
    ({"profile": "quick", "only": ["convnet ws+al dwa"]}, r"unknown settings"),
])
def test_bad_arguments_are_refused_before_any_file_is_written(kwargs, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        siamese.reproduce(out=tmp_path / "out", log=lambda m: None, **kwargs)
    assert not (tmp_path / "out").exists()


def test_unknown_reproduction_names_suggest_the_close_one():
    with pytest.raises(ValueError, match=r"name='siamse'.*Did you mean 'siamese'"):
        reproduce.get("siamse")


@pytest.mark.slow
def test_quick_profile_from_the_command_line(tmp_path):
    """`mtl-tf reproduce siamese --profile quick` end to end, one run per setting."""
    import subprocess
    import sys

    out = tmp_path / "quick"
    result = subprocess.run(
        [sys.executable, "-m", "training.cli", "reproduce", "siamese", "--profile", "quick",
         "--runs", "1", "--out", str(out)], capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads((out / "results.json").read_text())
    measured = [r for r in saved["rows"] if r["metric"] == "test_accuracy_mean_curve"]
    assert len(measured) == 18 and all(r["runs"] == 1 for r in measured)
    # Even after 25 epochs every setting compares digits far better than chance.
    assert all(r["ours"] > 0.75 for r in measured), measured
    assert "Partial" not in (out / "report.md").read_text()


@pytest.mark.slow  # the default suite near 10 minutes; its full profile is complete and committed
def test_allconv_pretrains_transfers_and_resumes(monkeypatch, tmp_path):
    from training.reproduce import allconv

    monkeypatch.setitem(allconv.PROFILES, "quick", {"train": 300, "pretrain_train": 150, "val": 200,
                                                    "test": 200, "stages": (1, 1), "tsne_images": 200})
    only = ["single mnist", "pretrain F+N+M", "transfer F+N+M mnist", "transfer M+F mnist"]
    lines = []
    results = allconv.reproduce("quick", tmp_path, only=only, log=lines.append)
    assert any("transfer M+F mnist: skipped, pretrain M+F is not finished" in line for line in lines)
    assert any("sliced ['head_mnist']" in line for line in lines)
    rows = {(r["task"], r["setting"], r["metric"]): r for r in results["rows"]}
    assert rows[("mnist", "single", "test_accuracy_last_epoch")]["paper"] == 0.9956
    assert rows[("mnist", "F+N+M", "test_accuracy_last_epoch")]["ours"] is not None
    assert rows[("letters", "F+N+M", "test_accuracy_last_epoch")]["paper"] is None  # other data
    assert rows[("mnist", "M+F", "test_accuracy")]["ours"] is None
    assert set(results["trainings"]["pretrain F+N+M"]["per_task_test_accuracy"]) == {
        "fashion_mnist", "letters", "mnist"}
    assert [results["trainings"][s]["train_images"] for s in only[:3]] == [300, 450, 300]
    for figure in ("lr_schedule.png", "tsne.png"):
        assert (tmp_path / figure).read_bytes()[:4] == b"\x89PNG"
    report = (tmp_path / "report.md").read_text()
    assert report.index("NotMNIST-like") < report.index("## Table 3") and "Partial" in report
    assert "300 training images per task (150 per task pooled in a pre-training)" in report
    # The transferred net started from the pre-trained trunk.
    single = allconv.load_model(tmp_path, "transfer F+N+M mnist")
    assert single.get_layer("trunk").count_params() > 0
    lines.clear()
    allconv.reproduce("quick", tmp_path, only=only[:3], log=lines.append)
    assert not any(line.startswith("[") for line in lines)  # nothing trained again


def test_allconv_sitting_cut_off_mid_setting_keeps_its_time_and_resumes(monkeypatch, tmp_path):
    from training.reproduce import allconv

    monkeypatch.setitem(allconv.PROFILES, "quick", {"train": 200, "val": 100, "test": 100, "stages": (1, 1)})
    epoch_log = allconv.EpochLog

    class CutOff(epoch_log):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt  # the session ends during the second epoch

    monkeypatch.setattr(allconv, "EpochLog", CutOff)
    with pytest.raises(KeyboardInterrupt):
        allconv.reproduce("quick", tmp_path, only=["single mnist"], log=print)
    (sitting,) = json.loads((tmp_path / "manifest.json").read_text())["sittings"]
    assert sitting["seconds"] > 0
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())

    monkeypatch.setattr(allconv, "EpochLog", epoch_log)  # the next sitting runs to the end
    lines = []
    results = allconv.reproduce("quick", tmp_path, only=["single mnist"], log=lines.append)
    assert "    resuming after epoch 1" in lines
    assert results["wall_seconds"] > sitting["seconds"]
    record = json.loads(reproduce.common.run_path(tmp_path, "single mnist", 0).read_text())
    assert len(record["history"]["val_mnist_accuracy"]) == 2  # epoch 1 kept, epoch 2 trained


def test_committed_records_let_a_fresh_folder_continue_the_table(monkeypatch, tmp_path):
    """A new machine has the committed records but no run folder: finished settings are
    skipped, transfers start from the recorded pre-trained weights, new runs are recorded."""
    from training.reproduce import allconv

    monkeypatch.setitem(allconv.PROFILES, "quick", {"train": 200, "val": 100, "test": 100, "stages": (1, 1)})
    records = tmp_path / "records"
    allconv.reproduce("quick", tmp_path / "first", only=["pretrain M+F"], log=print, records=records)
    pretrained = allconv.load_model(tmp_path / "first", "pretrain M+F")
    assert (records / "runs" / "pretrain_M-F" / "run-00.json").exists()

    lines = []
    results = allconv.reproduce("quick", tmp_path / "fresh", only=["pretrain M+F", "transfer M+F mnist"],
                                log=lines.append, records=records)
    assert [line for line in lines if line.startswith("[")] == ["[12/16] transfer M+F mnist"]
    assert results["trainings"]["pretrain M+F"]["train_images"] == 400
    assert (records / "runs" / "transfer_M-F_mnist" / "run-00.json").exists()
    assert len(json.loads((records / "manifest.json").read_text())["sittings"]) == 2
    # Each record names the machine it trained on; the report names the runs' machines.
    from training.reproduce.common import UNNAMED, device, machine_line

    assert results["trained_on"] == {device(): 2}
    assert machine_line(results) == device()
    assert machine_line({**results, "trained_on": {"Other CPU": 3, UNNAMED: 1}}) == (
        f"this report rendered on {device()}; its runs trained on Other CPU (3 runs), {UNNAMED} (1 run)")
    # The fresh folder's transfer read the recorded pre-trained net, not a new one.
    recorded = allconv.load_model(tmp_path / "fresh", "pretrain M+F", records)
    for a, b in zip(pretrained.weights, recorded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # Records of another protocol are refused, naming the option.
    monkeypatch.setitem(allconv.PROFILES, "quick", {"train": 300, "val": 100, "test": 100, "stages": (1, 1)})
    with pytest.raises(ValueError, match=r"`--records`.*train"):
        allconv.reproduce("quick", tmp_path / "other", log=print, records=records)


def test_the_papers_selection_is_the_peak_of_the_mean_curve():
    curves = [[0.50, 0.80, 0.86, 0.84],   # run 1 peaks at epoch 2
              [0.50, 0.88, 0.82, 0.85],   # run 2 peaks at epoch 1
              [0.50, 0.78, 0.84, 0.86]]   # run 3 peaks at epoch 3
    epoch, mean, std = siamese.mean_curve_selection(curves)
    # Mean curve: 0.5, 0.82, 0.84, 0.85 -> epoch 3; each run's own best would average 0.8667.
    assert epoch == 3
    assert mean == pytest.approx(0.85)
    assert std == pytest.approx(np.std([0.84, 0.85, 0.86], ddof=1))
    assert siamese.mean_curve_selection([[0.1, 0.3, 0.3], [0.2, 0.3, 0.3]])[0] == 1  # the first of ties


@pytest.mark.slow
def test_the_demo_trains_reports_and_exports(monkeypatch, tmp_path):
    """`make demo`'s path (`allconv.demo`) with a tiny profile: its report, its learning
    curves, and four SavedModels that refuse inputs outside [0, 1]."""
    import mtl_tf.export
    from training.reproduce import allconv

    monkeypatch.setitem(allconv.PROFILES, "demo", {**allconv.PROFILES["demo"], "train": 200, "val": 100, "test": 100, "stages": (1, 1)})
    results, paths = allconv.demo(tmp_path / "demo", tmp_path / "saved", log=lambda m: None)
    assert len(paths) == 4 and all((p / "saved_model.pb").is_file() for p in paths)
    assert mtl_tf.export.serving_info(paths[0])["value_range"] == [0.0, 1.0]
    assert (tmp_path / "demo" / "pretrain_learning_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert results["trainings"]["transfer F+N+M mnist"]["epochs"] == 2
    # Only what the demo trains: no column, row or "missing" cell of the settings it skips.
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "| dataset | single-task | F+N+M |" in report
    assert "missing" not in report and "Partial" not in report and "M+F" not in report
    assert {(r["setting"], r["task"]) for r in results["rows"]} == {
        (c, t) for c in ("single", "F+N+M") for t in ("mnist", "letters", "fashion_mnist")}


def test_selective_sharing_reports_each_run_and_resumes(monkeypatch, tmp_path):
    from training.reproduce import selective_sharing as ss

    full_load = ss.load
    monkeypatch.setattr(ss, "load", lambda data, n=None: [(x[:400], y[:400]) for x, y in full_load(data, n)])
    monkeypatch.setitem(ss.PROFILES, "quick", {"runs": 1, "epochs": 3, "train": 400, "steps_per_epoch": 4,
                                               "data": ("mnist",)})
    only = ["mnist stl", "mnist similarity"]
    results = ss.reproduce("quick", tmp_path, only=only, log=lambda *_: None)
    assert json.loads((tmp_path / "results.json").read_text()) == results
    run = results["runs"]["mnist similarity"][0]
    record = json.loads((tmp_path / "runs" / "mnist_similarity" / "run-00.json").read_text())
    assert run == {k: record.get(k) for k in ss.RUN_FIELDS}
    assert 1 <= run["chosen_epoch"] <= 3 and run["branches"] == len(run["groups"]) <= 10
    assert record["epochs"] == 3 and len(record["history"]["loss"]) == 3  # epochs of 4 batches of 64
    assert results["runs"]["mnist random"] == []
    rows = {(r["setting"], r["metric"]): r for r in results["rows"]}
    assert rows[("mnist similarity", "test_accuracy")]["paper"] == 0.99
    assert rows[("mnist stl", "params")]["ours"] == 500_700
    report = (tmp_path / "report.md").read_text()
    assert f"test {run['test_accuracy']:.4f} at epoch {run['chosen_epoch']}" in report
    assert "Partial" in report and (tmp_path / "groups.png").read_bytes()[:4] == b"\x89PNG"
    assert report.splitlines()[2].startswith(f"**Status: 2 of {len(ss.settings('quick'))} runs finished.**")
    assert "Fashion-MNIST" not in report.split("## MNIST")[1]  # the quick profile is MNIST's alone
    pairs = ss.pair_counts([{"groups": [["digit_2", "digit_3", "digit_5"], ["digit_1"]]}, {"groups": [["digit_5", "digit_2"]]}])
    assert pairs == {(2, 3): 1, (2, 5): 2, (3, 5): 1}
    again = ss.reproduce("quick", tmp_path, only=only, log=lambda *_: None)
    assert again["runs"] == results["runs"]


def _tiny_coarse_fine(monkeypatch):
    from training.reproduce import coarse_fine as cf

    monkeypatch.setitem(cf.PROFILES, "quick", {"runs": 1, "epochs": 2, "train": 300, "conv_filters": ((4,), (4,)),
                                               "head_units": (16, 8, 8), "batch_norm_momentum": 0.9})
    full_load = cf.load

    def small(data, train_size, seed):  # a small test split too
        parts, classes = full_load(data, train_size, seed)
        (xt, yt) = parts[2]
        return [*parts[:2], (xt[:200], {t: v[:200] for t, v in yt.items()})], classes

    monkeypatch.setattr(cf, "load", small)
    return cf


def test_coarse_fine_writes_table_2_and_figure_8_and_resumes(monkeypatch, tmp_path):
    cf = _tiny_coarse_fine(monkeypatch)
    monkeypatch.setenv("MTL_TF_CIFAR100", str(tmp_path / "none"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    only = ["fashion_mnist reuse_coarse paper", "fashion_mnist reuse_coarse uncertainty"]
    results = cf.reproduce("quick", tmp_path / "out", only=only, log=lambda *_: None)
    assert results["data"] == ["fashion_mnist", "pooled"]  # no CIFAR-100 here
    rows = {(r["setting"], r["metric"]): r for r in results["rows"]}
    cell = rows[("fashion_mnist reuse_coarse paper", "held_out_fine_accuracy")]
    record = json.loads((tmp_path / "out" / "runs" / "fashion_mnist_reuse_coarse_paper" / "run-00.json").read_text())
    assert cell["ours"] == record["held_out_fine_accuracy"] == record["history"]["val_fine_accuracy"][-1]
    assert cell["paper"] is None and record["held_out_images"] == 60 and record["train_images"] == 240
    assert rows[("fashion_mnist reuse_coarse paper", "params")]["ours"] == record["params"]
    assert results["orderings"] == []  # they need all six architectures
    report = (tmp_path / "out" / "report.md").read_text()
    assert "CIFAR-100's files are not on this machine" in report and "Reuse Coarse Labels" in report
    assert (tmp_path / "out" / "curves.png").read_bytes()[:4] == b"\x89PNG"
    again = cf.reproduce("quick", tmp_path / "out", only=only, log=lambda *_: None)
    assert again["rows"] == results["rows"]


@pytest.mark.slow
def test_coarse_fine_on_cifar100_files_fills_the_papers_column(monkeypatch, tmp_path):
    import pickle

    cf = _tiny_coarse_fine(monkeypatch)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 300), ("test", 50)):
        fine = rng.integers(0, 100, n)
        (folder / split).write_bytes(pickle.dumps(
            {b"fine_labels": fine.tolist(), b"coarse_labels": (fine // 5).tolist(),
             b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}, protocol=2))
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": [b"f%d" % i for i in range(100)],
                                                b"coarse_label_names": [b"c%d" % i for i in range(20)]}, 2))
    monkeypatch.setenv("MTL_TF_CIFAR100", str(folder))
    results = cf.reproduce("quick", tmp_path / "out", only=["cifar100 shared paper"], log=lambda *_: None)
    rows = {(r["setting"], r["metric"]): r for r in results["rows"]}
    assert rows[("cifar100 shared paper", "held_out_fine_accuracy")]["paper"] == 0.4909
    assert rows[("cifar100 shared paper", "test_coarse_accuracy")]["paper"] is None
    assert 0.0 <= rows[("cifar100 shared paper", "held_out_fine_accuracy")]["ours"] <= 1.0
    assert "CIFAR-100 (the paper's)" in (tmp_path / "out" / "report.md").read_text()
    # The author's augmentation: same shapes, other pixels.
    x = rng.random((4, 32, 32, 3)).astype("float32")
    (batch, labels), = cf.augmented(x, {"fine": np.arange(4)}, seed=1).take(1)
    assert batch.shape == (4, 32, 32, 3) and not np.allclose(batch, x)


def test_evolving_dae_reports_table_1_and_resumes_a_run_cut_off_mid_way(monkeypatch, tmp_path, capsys):
    from training.reproduce import evolving_dae as ed
    from training.reproduce.common import run_path

    monkeypatch.setitem(ed.PROFILES, "quick", {"epochs": 6, "runs": 1, "labelled": (100,), "unlabelled": (0, 1000),
                                               "architectures": ("nn1",), "eval_every": 2, "full_length": (8, 4)})
    monkeypatch.setattr(ed, "CORRUPTIONS", (0.1,))  # the choice itself: one level, one run
    setting = ed.Setting("nn1", 100, 1000, "exp_40")
    monkeypatch.setattr(ed, "CHOICE", setting)
    straight = ed.train_run(setting, 0, 6, 0.1, 2)
    assert [point[0] for point in straight["curve"]] == [2, 4, 6]

    original = ed.ClassError.on_epoch_end

    def cut_off(self, epoch, logs=None):  # killed after epoch 3; the checkpoint of epoch 2 stays
        original(self, epoch, logs)
        if epoch + 1 == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(ed.ClassError, "on_epoch_end", cut_off)
    with pytest.raises(KeyboardInterrupt):
        ed.train_run(setting, 0, 6, 0.1, 2, run_dir=tmp_path / "run")
    monkeypatch.setattr(ed.ClassError, "on_epoch_end", original)
    resumed = ed.train_run(setting, 0, 6, 0.1, 2, run_dir=tmp_path / "run")
    np.testing.assert_allclose([p[1:] for p in resumed["curve"]], [p[1:] for p in straight["curve"]], atol=0.02)
    assert resumed["seconds"] > 0

    only = ["nn1 l=100 baseline", "nn1 l=100 u=1000 exp_40", "nn1 l=100 u=1000 no_reconstruction"]
    results = ed.reproduce("quick", tmp_path / "out", only=only, log=lambda *_: None)
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == results
    assert results["corruption"]["chosen"] == 0.1
    runs = {name: json.loads(run_path(tmp_path / "out", name, 0).read_text()) for name in only}
    # The baseline ran the profile's full length; the chosen level's trial is the cell's first run.
    assert runs["nn1 l=100 baseline"]["epochs"] == 8 and [p[0] for p in runs["nn1 l=100 baseline"]["curve"]] == [4, 8]
    trial = json.loads(run_path(tmp_path / "out", "corruption 0.1", 0).read_text())
    assert runs["nn1 l=100 u=1000 exp_40"]["curve"] == trial["curve"] and runs["nn1 l=100 u=1000 exp_40"]["epochs"] == 6
    report = (tmp_path / "out" / "report.md").read_text()
    first = report.splitlines()[2]
    assert first.startswith(f"**Status: 3 of {len(ed.settings('quick'))} runs finished.**") and "h of training left" in first
    control = runs["nn1 l=100 u=1000 no_reconstruction"]["test_error"]
    assert f"{runs['nn1 l=100 u=1000 exp_40']['test_error'] - control:+.2f} +- 0.00" in report  # against the control
    assert "31.0" in report  # the paper's NN1 l = 100 baseline beside ours
    assert (tmp_path / "out" / "schedules.png").read_bytes()[:4] == b"\x89PNG"
    again = ed.reproduce("quick", tmp_path / "out", only=only, log=lambda *_: None)
    assert again["rows"] == results["rows"]

    # `--report` renders the finished runs into a new folder, trains nothing and leaves the
    # records' manifest as it was; with nothing finished it says so.
    from training import cli

    manifest = (tmp_path / "out" / "manifest.json").read_bytes()
    monkeypatch.setattr(ed, "train_run", lambda *a, **k: pytest.fail("--report trained"))
    argv = ["reproduce", "evolving_dae", "--records", str(tmp_path / "out"), "--report"]
    assert cli.main(argv + ["--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "out" / "manifest.json").read_bytes() == manifest
    rendered = (tmp_path / "report" / "report.md").read_text()
    assert rendered.splitlines()[2] == first
    assert (f"- l = 100, u = 1000, 1 seed, against the control: exp_40 "
            f"{runs['nn1 l=100 u=1000 exp_40']['test_error'] - control:+.2f} +- 0.00") in rendered
    assert cli.main(["reproduce", "evolving_dae", "--report", "--no-records", "--out", str(tmp_path / "none")]) == 1
    assert "no runs of evolving_dae quick" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()

    # The corruption choice cut off after its trials: each finished level is kept, none reruns.
    from training.reproduce.common import Workdir

    run_path(tmp_path / "out", "corruption choice", 0).unlink()
    monkeypatch.setattr(ed, "train_run", lambda *a, **k: pytest.fail("a finished level was trained again"))
    workdir = Workdir(tmp_path / "out", json.loads((tmp_path / "out" / "manifest.json").read_text())["protocol"])
    choice = ed.choose_corruption(workdir, 6, 2, 0, lambda *_: None)
    assert choice["chosen"] == 0.1 and choice["validation_error"] == results["corruption"]["validation_error"]


def test_evolving_dae_hands_a_run_in_progress_to_the_next_machine_through_its_records(monkeypatch, tmp_path):
    """A sitting's machine is not the next one's: a run cut off keeps its checkpoints in the
    committed records, and a fresh `--out` elsewhere resumes it from there."""
    from training.reproduce import evolving_dae as ed
    from training.reproduce.common import unfinished_path

    monkeypatch.setitem(ed.PROFILES, "quick", {"epochs": 6, "runs": 1, "labelled": (100,), "unlabelled": (1000,),
                                               "architectures": ("nn1",), "eval_every": 2})
    monkeypatch.setattr(ed, "CORRUPTIONS", (0.1,))
    monkeypatch.setattr(ed, "CHOICE", ed.Setting("nn1", 100, 1000, "exp_40"))
    original, trained = ed.ClassError.on_epoch_end, []

    def counted(self, epoch, logs=None):
        trained.append(epoch)
        original(self, epoch, logs)
        if epoch + 1 == 3 and len(trained) == 3:  # the first machine stops after epoch 3
            raise KeyboardInterrupt

    monkeypatch.setattr(ed.ClassError, "on_epoch_end", counted)
    records, only = tmp_path / "records", [ed.CHOICE.name]
    with pytest.raises(KeyboardInterrupt):
        ed.reproduce("quick", tmp_path / "first", only=only, records=records, log=lambda *_: None)
    assert (unfinished_path(records, "corruption 0.1", 0) / "checkpoints" / "checkpoint").is_file()
    results = ed.reproduce("quick", tmp_path / "second", only=only, records=records, log=lambda *_: None)
    assert trained == [0, 1, 2, 2, 3, 4, 5]  # resumed from the checkpoint of epoch 2
    assert results["corruption"]["chosen"] == 0.1
    assert not [p for p in (records / "unfinished").rglob("*") if p.is_file()]  # removed once recorded


def _where_it_ran(name, run):  # top level: the pool's workers import it
    import os

    import tensorflow as tf

    return {"setting": name, "seconds": 0.0, "pid": os.getpid(),
            "threads": [tf.config.threading.get_intra_op_parallelism_threads(),
                        tf.config.threading.get_inter_op_parallelism_threads()]}


def test_runs_train_side_by_side_in_one_thread_processes_and_each_is_saved(tmp_path):
    import os

    from training.reproduce.common import Workdir, run_settings

    workdir = Workdir(tmp_path / "out", {"name": "side_by_side"})
    workdir.save_run("b", 0, {"setting": "b", "seconds": 1.0, "pid": -1})  # finished: not run again
    found = run_settings(workdir, ["a", "b"], 2, ["a", "b"], _where_it_ran, lambda r: "ran", lambda *_: None,
                         order=[("b", 0), ("a", 0), ("a", 1), ("b", 1)], jobs=2)
    assert [r["pid"] for r in found["b"]][0] == -1 and len(found["a"]) == len(found["b"]) == 2
    ran = found["a"] + found["b"][1:]
    assert all(r["pid"] != os.getpid() and r["threads"] == [1, 1] for r in ran)
    again = run_settings(workdir, ["a", "b"], 2, ["a", "b"], lambda *a: pytest.fail("trained again"),
                         lambda r: "", lambda *_: None, jobs=2)
    assert again == found


@pytest.mark.slow  # a worker's TensorFlow start-up, up to a minute on a busy machine
def test_a_pool_worker_ends_when_the_command_that_started_it_is_killed():
    import os
    import signal
    import subprocess
    import sys
    import time

    script = ("import multiprocessing, os, time\n"
              "from concurrent.futures import ProcessPoolExecutor\n"
              "from training.reproduce.common import one_thread_worker\n"
              "if __name__ == '__main__':\n"
              "    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context('spawn'), initializer=one_thread_worker)\n"
              "    print(pool.submit(os.getpid).result(), flush=True)\n"
              "    pool.submit(time.sleep, 600)\n"
              "    time.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    worker = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)  # no clean-up: the pool cannot stop its worker
    parent.wait()
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    os.kill(worker, signal.SIGKILL)
    pytest.fail("the worker trained on after its command was killed")


def test_evolving_dae_full_profile_runs_the_decisive_cells_first_then_the_cheapest_first_runs():
    from training.reproduce import evolving_dae as ed

    pairs = ed.order("full", 3)
    names = [(s.name, r) for s, r in pairs]
    decisive = [(f"nn1 l=100 {c}", r) for c in ("baseline", "u=10000 exp_40", "u=10000 no_reconstruction",
                                               "u=10000 lin", "u=40000 exp_40", "u=40000 no_reconstruction",
                                               "u=40000 lin") for r in range(3)]
    assert names[:21] == decisive
    assert sorted(names) == sorted({(s.name, r) for s in ed.settings("full") for r in range(3)})
    rest = pairs[21:]
    first = [s for s, r in rest if r == 0]
    assert [r for _, r in rest] == sorted(r for _, r in rest)  # every first run before any second
    costs = [ed.steps(s, 5000) for s in first]
    assert costs == sorted(costs) and len(first) == len(ed.settings("full")) - 7


def test_evolving_dae_time_model_recovers_an_epoch_and_a_step_cost():
    from training.reproduce import evolving_dae as ed

    def record(setting, epochs):  # 20 ms an epoch, 5 ms a step
        return {"setting": setting.name, "epochs": epochs, "seconds": 0.02 * epochs + 0.005 * ed.steps(setting, epochs)}

    cells = [ed.Setting("nn1", 100), ed.Setting("nn1", 100, 0, "lin"), ed.Setting("nn1", 100, 10000, "exp_40")]
    cost = ed.run_seconds({c.name: [record(c, e)] for c, e in zip(cells, (5000, 5000, 150))})
    big = ed.Setting("nn1", 100, 40000, "lin")
    np.testing.assert_allclose(cost(big, 5000), 0.02 * 5000 + 0.005 * ed.steps(big, 5000), rtol=1e-6)
    assert ed.run_seconds({}) is None


def test_both_profiles_commit_their_records_from_a_checkout(monkeypatch, tmp_path):
    """A quick profile of several hours cut off by the end of a sitting must continue on
    the next machine, as the full one does: both keep records under docs/results/records."""
    from pathlib import Path

    from training.reproduce.common import default_records

    monkeypatch.chdir(tmp_path)
    assert default_records("evolving_dae", "quick") is None  # not a checkout: nothing kept
    (tmp_path / "docs" / "results").mkdir(parents=True)
    for profile in ("quick", "full"):
        assert default_records("evolving_dae", profile) == Path(f"docs/results/records/evolving_dae-{profile}")


def test_committed_run_records_are_not_ignored_by_git():
    """The records a fresh clone continues from must reach the repository: a pattern such
    as `runs/` in .gitignore once kept every per-run file out."""
    import shutil
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    for path in ("docs/results/records/allconv-full/runs/single_mnist/run-00.json",
                 "docs/results/records/allconv-full/models/pretrain_FN.weights.h5"):
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=root).returncode == 1, path
    assert subprocess.run(["git", "check-ignore", "-q", "runs/reproduce/x/report.md"], cwd=root).returncode == 0


def test_mmoe_writes_its_table_figure_and_claim_and_resumes(monkeypatch, tmp_path):
    from training.reproduce import mmoe

    monkeypatch.setitem(mmoe.PROFILES, "quick", {"runs": 2, "epochs": 1})
    monkeypatch.setattr(mmoe, "TRAIN", 256)
    monkeypatch.setattr(mmoe, "TEST", 128)
    monkeypatch.setattr(mmoe, "CORRELATIONS", (0.5, 1.0))
    monkeypatch.setattr(mmoe, "EXTRA_MODELS", ())
    results = mmoe.reproduce("quick", tmp_path, log=lambda m: None)
    assert {"report.md", "results.json", "curves.png", "manifest.json"} <= {p.name for p in tmp_path.iterdir()}
    cells = {r["setting"]: r for r in results["rows"] if r["metric"].startswith("final_test_loss")}
    assert cells["p=0.5 mmoe"]["runs"] == 2 and cells["p=0.5 mmoe"]["paper"] is None
    # The gap is the paired difference of the two models' final test losses.
    runs = {m: [json.loads(p.read_text())["test_loss"][-1]
                for p in sorted((tmp_path / "runs" / f"p=0.5_{m}").glob("run-*.json"))]
            for m in ("shared_bottom", "mmoe")}
    assert cells["p=0.5 shared_bottom - mmoe"]["ours"] == pytest.approx(
        np.mean(np.subtract(runs["shared_bottom"], runs["mmoe"])))
    assert results["claim_holds"] in (True, False) and results["claim_holds_on_test_loss"] in (True, False)
    assert "The claim" in (tmp_path / "report.md").read_text()
    # Started again, every run is found: nothing trains.
    monkeypatch.setattr(mmoe, "train_run", lambda *a: pytest.fail("a finished run was trained again"))
    assert mmoe.reproduce("quick", tmp_path, log=lambda m: None)["rows"] == results["rows"]
