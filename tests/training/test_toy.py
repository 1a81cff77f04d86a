"""The two-objective toy: the problem against the repositories' values, the Pareto set
against its definition, and the Trainer fed exactly the toy's losses."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from training import toy


def _f(x1, x2):  # the repositories' code, scalar by scalar
    c1, c2 = max(math.tanh(x2 / 2), 0.0), max(math.tanh(-x2 / 2), 0.0)
    f1 = math.log(max(abs(0.5 * (-x1 - 7) - math.tanh(-x2)), 5e-6)) + 6
    f2 = math.log(max(abs(0.5 * (-x1 + 3) + math.tanh(-x2) + 2), 5e-6)) + 6
    q1 = ((-x1 + 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
    q2 = ((-x1 - 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
    return c1 * f1 + c2 * q1, c1 * f2 + c2 * q2


def test_objectives_are_the_repositories():
    for point in [(0.0, 0.0), (9.0, -1.0), (-7.5, -0.5), (-8.5, 7.5), (9.0, 9.0), (3.0, -8.0)]:
        np.testing.assert_allclose(toy.objectives(*point), _f(*point), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(toy.objectives(9.0, -1.0), (-8.83, 2.81), atol=0.01)
    np.testing.assert_allclose(toy.objectives(-7.5, -0.5), (0.39, -4.75), atol=0.01)


def test_the_pareto_set_is_where_the_gradients_oppose():
    front = toy.pareto_set(201)
    x = tf.Variable(front)
    with tf.GradientTape(persistent=True) as tape:
        f1, f2 = toy.objectives(x[:, 0], x[:, 1], keras.ops)
    g1, g2 = tape.gradient(f1, x).numpy(), tape.gradient(f2, x).numpy()
    inner = front[1:-1]  # the ends are each task's own minimum: one gradient vanishes there
    cos = np.sum(g1 * g2, 1) / (np.linalg.norm(g1, axis=1) * np.linalg.norm(g2, axis=1))
    assert np.all(cos[1:-1] < -1 + 1e-6), cos.max()
    assert np.linalg.norm(g1[-1]) < 1e-5 and np.linalg.norm(g2[0]) < 1e-5
    assert inner[:, 0].min() > -7 and inner[:, 0].max() < 7
    # The gap: about 0 on the set, and off it how much a point of the set beats it on both.
    assert abs(toy.gap(front[57], front)) < 1e-9
    f1, f2 = _f(0.0, 0.0)  # (0, 0); the set's middle point is (-15.09, -15.09)
    assert toy.gap((0.0, 0.0), front) == pytest.approx(min(f1, f2) + 15.0916, abs=1e-3)


def test_the_trainer_sees_the_toys_losses():
    """Equal weighting through the Trainer follows a plain GradientTape + Adam loop on L1 + L2."""
    start, steps = (9.0, -1.0), 2 * toy.EPOCH_STEPS
    path = toy.run("equal", start, steps=steps)
    x = tf.Variable(start, dtype=tf.float32)
    adam = keras.optimizers.Adam(toy.LEARNING_RATE)
    expected = []
    for step in range(steps):
        with tf.GradientTape() as tape:
            loss = tf.add_n(list(toy.task_losses(x[0], x[1], keras.ops)))
        adam.apply_gradients([(tape.gradient(loss, x), x)])
        if (step + 1) % toy.EPOCH_STEPS == 0:
            expected.append(x.numpy().copy())
    np.testing.assert_allclose(path[1:], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name, start, reached", [("mgda", (9.0, -1.0), True), ("equal", (-8.5, 7.5), False)])
def test_runs_end_on_or_off_the_front(name, start, reached):
    front = toy.pareto_set()
    end = toy.run(name, start, steps=3_500, learning_rate=1e-2)[-1]  # a tenth of the default's steps
    assert toy.reached(end, front) == reached, (end, toy.gap(end, front))


@pytest.mark.slow
def test_parallel_processes_run_the_same_trajectories():
    names, starts = ["equal", "mgda"], [(9.0, -1.0)]
    alone = toy.run_all(names, starts, steps=toy.EPOCH_STEPS, log=lambda m: None)
    side_by_side = toy.run_all(names, starts, steps=toy.EPOCH_STEPS, jobs=2, log=lambda m: None)
    assert list(side_by_side) == names
    for name in names:
        np.testing.assert_array_equal(side_by_side[name][0], alone[name][0])


def test_a_demo_resumes_from_the_strategies_it_kept(tmp_path, monkeypatch):
    first = toy.run_all(["equal"], [(9.0, -1.0)], steps=toy.EPOCH_STEPS, keep=tmp_path, log=lambda m: None)
    monkeypatch.setattr(toy, "_runs", lambda *a: pytest.fail("a kept strategy was run again"))
    again = toy.run_all(["equal"], [(9.0, -1.0)], steps=toy.EPOCH_STEPS, keep=tmp_path, log=lambda m: None)
    np.testing.assert_array_equal(again["equal"][0], first["equal"][0])
