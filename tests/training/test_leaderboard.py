"""The leaderboard (`mtl-tf reproduce multi_mnist`): its learning-rate search, its table
recomputed from the run records, and its resume."""

import json

import numpy as np
import pytest

from training.reproduce import multi_mnist as lb


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setitem(lb.PROFILES, "quick", {"runs": 2, "epochs": 2, "train": 256, "val": 128,
                                               "learning_rates": (1e-3, 1e-2)})


def _records(folder):
    return {p.parent.name: [json.loads(q.read_text()) for q in sorted(p.parent.glob("run-*.json"))]
            for p in folder.glob("runs/*/run-00.json")}


def test_search_table_and_resume(tiny, tmp_path, monkeypatch):
    results = lb.reproduce("quick", tmp_path, log=lambda m: None, datasets=("multi_mnist",),
                           method_names=["stl", "equal"])
    assert {"report.md", "results.json", "leaderboard.png", "manifest.json"} <= {p.name for p in tmp_path.iterdir()}
    records = _records(tmp_path)
    cells = {c["method"]: c for c in results["leaderboard"]}
    for method in ("stl", "equal"):
        run0 = {rate: records[f"multi_mnist_{method}_lr={rate:g}"][0] for rate in (1e-3, 1e-2)}
        best = max(run0, key=lambda rate: (max(run0[rate]["val_accuracy"]), -rate))
        assert cells[method]["learning_rate"] == best
        other = [r for r in run0 if r != best][0]
        assert len(records[f"multi_mnist_{method}_lr={other:g}"]) == 1  # the search's run 0 only
        chosen = records[f"multi_mnist_{method}_lr={best:g}"]
        assert [r["run"] for r in chosen] == [0, 1]
        means = [100 * np.mean(list(r["test_accuracy"].values())) for r in chosen]
        assert cells[method]["mean"] == pytest.approx(np.mean(means))
        assert cells[method]["mean_std"] == pytest.approx(np.std(means, ddof=1))
        # The epoch read is the best validation epoch of each run.
        assert all(r["best_epoch"]["left"] == int(np.argmax(r["val_accuracy"])) for r in chosen if method != "stl")
    stl = cells["stl"]
    expected = 100 * np.mean([(cells["equal"][t] - stl[t]) / stl[t] for t in ("left", "right")])
    assert cells["equal"]["delta_m"] == pytest.approx(expected)
    assert sorted(c["rank"] for c in cells.values()) == [1, 2]
    assert [c["method"] for c in sorted(cells.values(), key=lambda c: c["rank"])] == sorted(
        cells, key=lambda m: -cells[m]["mean"])
    report = (tmp_path / "report.md").read_text()
    assert "Complete: all 2 cells" in report and "| single-task | 97.23 |" in report
    paper = {r["setting"] + " " + r["task"]: r["paper"] for r in results["rows"]}
    assert paper["multi_mnist equal left"] == pytest.approx(0.9646) and paper["multi_mnist stl right"] == pytest.approx(0.959)

    # Started again nothing trains; with one record gone, only that run does.
    monkeypatch.setattr(lb, "train_run", lambda *a: pytest.fail("a finished run was trained again"))
    assert lb.reproduce("quick", tmp_path, log=lambda m: None, datasets=("multi_mnist",),
                        method_names=["stl", "equal"])["leaderboard"] == results["leaderboard"]
    gone = tmp_path / "runs" / f"multi_mnist_equal_lr={cells['equal']['learning_rate']:g}" / "run-01.json"
    kept = json.loads(gone.read_text())
    gone.unlink()
    trained = []
    monkeypatch.setattr(lb, "train_run", lambda *a: trained.append(a[:4]) or kept)
    lb.reproduce("quick", tmp_path, log=lambda m: None, datasets=("multi_mnist",),
                 method_names=["stl", "equal"])
    assert trained == [("multi_mnist", "equal", cells["equal"]["learning_rate"], 1)]


def _run(method, left, right, lr=1e-3, run=0):
    return {"setting": f"d {method} lr={lr:g}", "run": run, "val_accuracy": [0.5], "epoch_seconds": 1.0,
            "seconds": 2.0, "test_accuracy": {"left": left, "right": right}}


def test_ranks_gains_and_the_tuned_equal_baseline():
    found = {"multi_mnist stl": [_run("stl", 0.90, 0.80), _run("stl", 0.92, 0.82, run=1)],
             "multi_mnist equal": [_run("equal", 0.90, 0.84), _run("equal", 0.90, 0.86, run=1)],
             # 90.0 +- 0.0 beats equal (87.5 +- 0.71) by more than either std
             "multi_mnist pcgrad": [_run("pcgrad", 0.92, 0.88), _run("pcgrad", 0.92, 0.88, run=1)],
             # 88.0 +- 0.71: better by 0.5, within the larger std
             "multi_mnist mgda": [_run("mgda", 0.91, 0.84), _run("mgda", 0.91, 0.86, run=1)]}
    rates = {cell: 1e-3 for cell in found}
    results = lb.summarise(found, rates, "quick", lb.PROFILES["quick"], 2, 0, 10.0, ("multi_mnist",),
                           ["stl", "equal", "pcgrad", "mgda"])
    cells = {c["method"]: c for c in results["leaderboard"]}
    assert [cells[m]["rank"] for m in ("pcgrad", "mgda", "equal", "stl")] == [1, 2, 3, 4]
    assert cells["pcgrad"]["beats_equal"] is True and cells["mgda"]["beats_equal"] is False
    assert cells["equal"]["beats_equal"] is None
    assert cells["pcgrad"]["delta_m"] == pytest.approx(100 * ((92 - 91) / 91 + (88 - 81) / 81) / 2)
    assert results["overall_rank"] == {"pcgrad": 1.0, "mgda": 2.0, "equal": 3.0, "stl": 4.0}
    assert results["complete_cells"] == 4
    assert results["same_runs"] == []
    found["multi_mnist upgrad"] = [dict(r, setting="d upgrad lr=0.001") for r in found["multi_mnist pcgrad"]]
    rates["multi_mnist upgrad"] = 1e-3
    same = lb.summarise(found, rates, "quick", lb.PROFILES["quick"], 2, 0, 10.0, ("multi_mnist",),
                        ["stl", "equal", "pcgrad", "mgda", "upgrad"])["same_runs"]
    assert same == [{"methods": ["pcgrad", "upgrad"], "datasets": ["multi_mnist"], "why": lb.SAME[("pcgrad", "upgrad")]}]
    del found["multi_mnist upgrad"]
    # A cell with fewer runs than the profile's is reported as missing.
    found["multi_mnist mgda"] = found["multi_mnist mgda"][:1]
    partial = lb.summarise(found, rates, "quick", lb.PROFILES["quick"], 2, 0, 10.0, ("multi_mnist",),
                           ["stl", "equal", "pcgrad", "mgda"])
    assert partial["complete_cells"] == 3
    assert "Partial: 3 of 4 cells complete" in lb.render_report(partial)
    assert "1 of 2 methods beat the tuned equal weighting beyond one std: pcgrad." in lb.render_report(partial)


def test_every_applicable_strategy_is_on_the_board():
    from mtl_tf import weighting

    names = lb.methods()
    assert names[:2] == ["stl", "equal"] and len(names) == len(set(names))
    assert set(names[1:]) | set(lb.EXCLUDED) == set(weighting.available())


def test_a_rate_searched_on_one_set_serves_the_others(monkeypatch, tmp_path):
    """The quick profile's search on MultiMNIST alone: the other sets train only at the rate
    it chose, per method (the runs are stand-ins: this checks the protocol, not training)."""
    calls = []

    def fake(dataset, method, rate, run, run_seed, config):
        calls.append((dataset, method, rate, run))
        best = {"equal": 1e-3, "mgda": 1e-2}[method]  # each method's own best rate
        return {"setting": lb.setting_name(dataset, method, rate), "run": run, "epoch_seconds": 1.0, "seconds": 1.0,
                "val_accuracy": [0.9 if rate == best else 0.5], "test_accuracy": {"left": 0.9, "right": 0.8}}

    monkeypatch.setattr(lb, "train_run", fake)
    monkeypatch.setitem(lb.PROFILES, "quick", {**lb.PROFILES["quick"], "learning_rates": (1e-3, 1e-2)})
    results = lb.reproduce("quick", tmp_path, log=lambda m: None, datasets=("multi_mnist", "multi_fashion"),
                           method_names=["equal", "mgda"])
    assert sorted(c for c in calls if c[0] == "multi_fashion") == [
        ("multi_fashion", "equal", 1e-3, r) for r in range(3)] + [("multi_fashion", "mgda", 1e-2, r) for r in range(3)]
    assert len([c for c in calls if c[0] == "multi_mnist"]) == 2 * (2 + 2)
    assert {(c["dataset"], c["method"]): c["learning_rate"] for c in results["leaderboard"]} == {
        ("multi_mnist", "equal"): 1e-3, ("multi_mnist", "mgda"): 1e-2,
        ("multi_fashion", "equal"): 1e-3, ("multi_fashion", "mgda"): 1e-2}
    assert "searched on MultiMNIST alone" in (tmp_path / "report.md").read_text()
