"""Gate weights and cross-stitch coefficients in every epoch's logs, recomputed from the
trained model; the plot of a run's history."""

import csv

import keras
import numpy as np
import pytest

import zoo
from mtl_tf.inspection import plot_gates
from training import Trainer

RNG = np.random.default_rng(9)
X = RNG.normal(size=(300, 10)).astype("float32")
Y = {"a": RNG.integers(0, 3, 300), "b": RNG.integers(0, 2, 300)}


@pytest.mark.parametrize("name", ["mmoe", "dselect_k"])
def test_each_gates_mean_weight_per_expert_is_logged_every_epoch(name, tmp_path, capsys):
    """In the history, the CSV and the plot; not on the progress line."""
    keras.utils.set_random_seed(0)
    model = zoo.build(name, tasks={"a": 3, "b": 2}, input_shape=(10,), experts=4)
    history = Trainer(model, run_dir=tmp_path).fit(X, Y, epochs=2, batch_size=50, verbose=2).history
    shown = capsys.readouterr().out
    assert "a_loss" in shown and "_expert_" not in shown
    for task in "ab":
        gate = keras.Model(model.input, model.get_layer(f"gate_{task}").output)
        want = np.asarray(gate(X[:256])).mean(axis=0)  # the first 256 training inputs
        got = [history[f"gate_{task}_expert_{i}"][-1] for i in range(4)]
        np.testing.assert_allclose(got, want, rtol=1e-5)
        assert sum(got) == pytest.approx(1.0, rel=1e-5)
    rows = list(csv.DictReader(open(tmp_path / "history.csv")))
    assert float(rows[1]["gate_b_expert_3"]) == pytest.approx(history["gate_b_expert_3"][1], rel=1e-6)
    assert plot_gates(tmp_path / "history.csv", tmp_path / "gates.png").stat().st_size > 1000


def test_cross_stitch_coefficients_are_logged_and_plotted(tmp_path):
    model = zoo.build("cross_stitch", tasks={"a": 3, "b": 2}, input_shape=(10,), units=(6,))
    history = Trainer(model).fit(X, Y, epochs=1, batch_size=50, verbose=0).history
    alpha = model.get_layer("stitch_0").alpha.numpy()
    assert history["stitch_0_a_from_b"] == [pytest.approx(float(alpha[0, 1]))]
    assert history["stitch_0_b_from_b"] == [pytest.approx(float(alpha[1, 1]))]
    assert plot_gates(history, tmp_path / "stitch.png").is_file()


def test_a_history_without_gates_is_refused():
    with pytest.raises(ValueError, match="no gate or cross-stitch entries"):
        plot_gates({"loss": [1.0]}, "never.png")
