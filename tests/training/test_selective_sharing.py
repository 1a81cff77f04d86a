"""Selective Sharing (paper 002): capture, decomposition, clustering, merging, lock, resume."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from tests.helpers import run_saved_model_roundtrip
from training import Trainer
from training import selective_sharing as ss
from training.selective_sharing import SelectiveSharing, cluster_tasks, tt_cores, tt_point
from zoo.selective_sharing import branch_of, groups_of, one_vs_all_tasks, regroup

NAMES = ["a", "a_copy", "b", "c", "d"]


def _problem(n=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype("float32")
    a = (x[:, 0] > 0).astype("int64")
    y = {"a": a, "a_copy": a.copy(), "b": (x[:, 1] * x[:, 2] > 0).astype("int64"),
         "c": (x[:, 3] > 0.5).astype("int64"), "d": (x[:, 4] + x[:, 5] > 0).astype("int64")}
    return x, y


def _model(groups=None, seed=0):
    keras.utils.set_random_seed(seed)
    return zoo.build("selective_sharing", tasks=one_vs_all_tasks(NAMES), input_shape=(8,),
                     trunk="dense", shared_units=16, branch_units=(8, 4), groups=groups)


def _trainer(model, **kwargs):
    kwargs.setdefault("optimizer", keras.optimizers.SGD(0.05, momentum=0.5))
    return Trainer(model, tasks=one_vs_all_tasks(NAMES), **kwargs)


# === Merging =================================================================================
def test_a_merge_keeps_the_survivor_bit_for_bit_its_outputs_and_its_optimizer_state():
    x, y = _problem()
    trainer = _trainer(_model())
    trainer.fit(x, y, epochs=1, batch_size=32, verbose=0)
    old = trainer.model
    survivor = branch_of(old, "b")
    kept = [w.numpy().copy() for w in survivor.weights]
    old_optimizer = trainer.optimizer
    slots = [old_optimizer.momentums[old_optimizer._get_variable_index(v)].numpy().copy()
             for v in survivor.trainable_variables]
    assert all(np.abs(s).sum() > 0 for s in slots)  # momentum after an epoch
    before = {k: v.numpy() for k, v in old(x, training=False).items()}
    branch_params = survivor.count_params()

    new, pairs = regroup(old, [["a", "b"]], keep=["b", "a_copy", "c", "d"])
    trainer.replace_model(new, pairs)

    assert groups_of(trainer.model) == [["a", "b"], ["a_copy"], ["c"], ["d"]]
    merged = branch_of(trainer.model, "a")
    assert merged is branch_of(trainer.model, "b") and merged is not survivor
    for w, k in zip(merged.weights, kept):
        assert np.array_equal(w.numpy(), k)
    after = {k: v.numpy() for k, v in trainer.model(x, training=False).items()}
    for task in ("b", "a_copy", "c", "d"):  # "a" now reads b's branch
        assert np.array_equal(after[task], before[task])
    assert old.count_params() - trainer.model.count_params() == branch_params
    optimizer = trainer.optimizer
    assert optimizer is not old_optimizer
    assert int(optimizer.iterations.numpy()) == int(old_optimizer.iterations.numpy())
    for v, slot in zip(merged.trainable_variables, slots):
        assert np.array_equal(optimizer.momentums[optimizer._get_variable_index(v)].numpy(), slot)
    history = trainer.fit(x, y, epochs=1, batch_size=32, verbose=0).history
    assert np.isfinite(history["loss"][0])


def test_join_merges_transitively_and_keeps_existing_groups():
    groups = [["a", "b"], ["a_copy"], ["c"], ["d"]]
    assert ss.join(groups, [["b", "c"]], NAMES) == [["a", "b", "c"], ["a_copy"], ["d"]]
    assert ss.join(groups, [], NAMES) == groups


# === Capture ==================================================================================
@pytest.mark.parametrize("weighting", ["equal", "uncertainty", "pcgrad"])
def test_captured_gradients_equal_per_task_tape_gradients(weighting):
    x, y = _problem(n=96)
    model = _model(groups=[["a", "b"]])
    # Learning rate 0: every step sees the same weights, so the epoch's sum is the sum
    # of per-batch gradients a plain tape computes.
    trainer = _trainer(model, weighting=weighting, optimizer=keras.optimizers.SGD(0.0), shuffle=False)
    trainer.capture_branch_gradients()
    trainer.fit(x, y, epochs=1, batch_size=32, verbose=0)
    captured = trainer.captured_branch_gradients()
    expected = np.zeros_like(captured)
    for i, task in enumerate(NAMES):
        kernel = branch_of(model, task).get_layer("branch_point").kernel
        for start in range(0, len(x), 32):
            xb, yb = x[start: start + 32], y[task][start: start + 32].astype("float32")
            with tf.GradientTape() as tape:
                logits = tf.reshape(model(xb, training=True)[task], [-1])
                loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=yb, logits=logits))
            expected[i] += tape.gradient(loss, kernel).numpy()
    np.testing.assert_allclose(captured, expected, rtol=2e-4, atol=1e-6)
    assert np.abs(captured[0] - captured[2]).max() > 1e-4  # a and b share a kernel, not a gradient


def test_the_own_branch_shortcut_equals_tapping_every_task():
    x, y = _problem(n=64)
    results = []
    for tap_all in (False, True):
        trainer = _trainer(_model(groups=[["c", "d"]]), optimizer=keras.optimizers.SGD(0.0), shuffle=False)
        trainer.capture_branch_gradients(tap_all=tap_all)
        trainer.fit(x, y, epochs=1, batch_size=32, verbose=0)
        results.append(trainer.captured_branch_gradients())
    np.testing.assert_allclose(results[0], results[1], rtol=1e-4, atol=1e-7)


# === Decomposition and clustering ==============================================================
def test_tt_cores_rebuild_the_gradient_and_fix_signs():
    rng = np.random.default_rng(1)
    gradient = rng.normal(size=(6, 4))
    shape = ss.tt_shape(6, 4, largest=3)
    assert shape == (3, 2, 2, 2)
    cores = tt_cores(gradient, rank=4, shape=shape)  # full rank: exact
    rebuilt = cores[0]
    for core in cores[1:]:
        rebuilt = np.tensordot(rebuilt, core, axes=([-1], [0]))
    np.testing.assert_allclose(rebuilt.reshape(6, 4), gradient, atol=1e-10)
    for core in cores[:-1]:
        flat = core.reshape(-1, core.shape[-1])
        assert (flat[np.argmax(np.abs(flat), axis=0), np.arange(flat.shape[1])] > 0).all()
    # A point ignores scale.
    np.testing.assert_allclose(tt_point(3 * gradient, 2), tt_point(gradient, 2), atol=1e-12)


def test_two_copies_of_one_task_end_in_one_group_and_unrelated_tasks_do_not():
    x, y = _problem(n=512)
    callback = SelectiveSharing(verbose=False)
    trainer = _trainer(_model())
    trainer.fit(x, y, epochs=1, batch_size=32, callbacks=[callback], verbose=0)
    groups = groups_of(trainer.model)
    together = {t: next(g for g in groups if t in g) for t in NAMES}
    assert "a_copy" in together["a"]
    assert "b" not in together["a"] and "c" not in together["a"] and "d" not in together["a"]
    assert callback.rows[0]["changed"]


def test_the_random_criterion_is_seeded_and_matches_similaritys_sizes():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 20))
    points = np.concatenate([c + 0.01 * rng.normal(size=(3, 20)) for c in centres])
    names = [f"t{i}" for i in range(9)]
    similar = cluster_tasks(points, names, "similarity")
    assert sorted(map(sorted, similar)) == [["t0", "t1", "t2"], ["t3", "t4", "t5"], ["t6", "t7", "t8"]]
    first = cluster_tasks(points, names, "random", seed=5, epoch=2)
    assert first == cluster_tasks(points, names, "random", seed=5, epoch=2)
    assert sorted(map(len, first)) == [3, 3, 3]
    assert any(cluster_tasks(points, names, "random", seed=s, epoch=2) != first for s in range(6, 10))
    # Dissimilarity puts far points together: never two of one tight cluster.
    for group in cluster_tasks(points, names, "dissimilarity"):
        assert len({int(n[1:]) // 3 for n in group}) == len(group)
    # Variance puts every task in a cluster.
    assert sorted(n for g in cluster_tasks(points[:7], names[:7], "variance") for n in g) == names[:7]


def test_no_cluster_is_no_merge():
    points = np.eye(6) * np.arange(1, 7)[:, None] ** 2  # spread ever wider: no dense pair
    names = [f"t{i}" for i in range(6)]
    assert cluster_tasks(points, names) == []


# === Lock =====================================================================================
def test_grouping_locks_after_patience_epochs_without_change(monkeypatch):
    monkeypatch.setattr(ss, "cluster_tasks", lambda *args, **kwargs: [])
    x, y = _problem(n=64)
    callback = SelectiveSharing(patience=2, verbose=False)
    trainer = _trainer(_model())
    history = trainer.fit(x, y, epochs=4, batch_size=32, callbacks=[callback], verbose=0).history
    assert [r["epoch"] for r in callback.rows] == [1, 2]
    assert callback.lock_epoch == 2 and trainer._capture is None
    assert history["branches"] == [5.0] * 4
    assert history["sharing_decomposition_seconds"][2:] == [0.0, 0.0]


def test_grouping_locks_when_every_task_is_grouped(monkeypatch):
    monkeypatch.setattr(ss, "cluster_tasks",
                        lambda *args, **kwargs: [["a", "a_copy"], ["b", "c", "d"]])
    x, y = _problem(n=64)
    callback = SelectiveSharing(verbose=False)
    trainer = _trainer(_model())
    history = trainer.fit(x, y, epochs=2, batch_size=32, callbacks=[callback], verbose=0).history
    assert callback.lock_epoch == 1 and len(callback.rows) == 1
    assert groups_of(trainer.model) == [["a", "a_copy"], ["b", "c", "d"]]
    assert history["branches"] == [2.0, 2.0]
    assert history["params"][0] < _model().count_params()


# === Round trips ==============================================================================
def test_a_grouped_model_round_trips_through_savedmodel(tmp_path):
    model = _model(groups=[["a", "c"], ["b", "d"]])
    x = np.random.default_rng(0).normal(size=(4, 8)).astype("float32")
    names = run_saved_model_roundtrip(model, tmp_path / "export", x)
    assert set(NAMES) | {"serving_default"} <= set(names)


def test_resume_rebuilds_the_grouping_of_the_checkpoint(tmp_path, monkeypatch):
    merges = iter([[["a", "a_copy"]], [], [["b", "c"]]])
    monkeypatch.setattr(ss, "cluster_tasks", lambda *args, **kwargs: next(merges))
    x, y = _problem(n=64)
    trainer = _trainer(_model(), run_dir=tmp_path)
    trainer.fit(x, y, epochs=3, batch_size=32, callbacks=[SelectiveSharing(verbose=False)], verbose=0)
    weights = [w.numpy() for w in trainer.model.weights]

    # A fresh process builds the ungrouped model: the callback rebuilds the grouping.
    callback = SelectiveSharing(verbose=False)
    again = _trainer(_model(seed=1), run_dir=tmp_path)
    callback.set_trainer(again)
    assert again.restore() == 3
    assert groups_of(again.model) == [["a", "a_copy"], ["b", "c"], ["d"]]
    for w, expected in zip(again.model.weights, weights):
        assert np.array_equal(w.numpy(), expected)

    # Killed after epoch 3's grouping was recorded but before its checkpoint was whole:
    # the run resumes from epoch 2, with epoch 2's grouping.
    data = next((tmp_path / "checkpoints").glob("ckpt-3.data-*"))
    data.write_bytes(data.read_bytes()[:100])
    callback = SelectiveSharing(verbose=False)
    again = _trainer(_model(seed=1), run_dir=tmp_path)
    callback.set_trainer(again)
    with pytest.warns(UserWarning, match="cannot be read"):
        assert again.restore() == 2
    assert groups_of(again.model) == [["a", "a_copy"], ["b"], ["c"], ["d"]]
    monkeypatch.setattr(ss, "cluster_tasks", lambda *args, **kwargs: [])
    history = again.fit(x, y, epochs=4, batch_size=32, callbacks=[callback], verbose=0).history
    assert history["branches"] == [4.0, 4.0]
    assert [r["epoch"] for r in callback.rows] == [1, 2, 3, 4]
    assert not callback.rows[2]["changed"]


# === Bad input ================================================================================
def test_bad_input_is_refused_with_the_argument_named():
    with pytest.raises(ValueError, match=r"at least two tasks"):
        zoo.build("selective_sharing", tasks=one_vs_all_tasks(["a"]), input_shape=(8,), trunk="dense")
    with pytest.raises(ValueError, match=r"`branch_units` must be positive integers.*branch point"):
        zoo.build("selective_sharing", input_shape=(8,), trunk="dense", branch_units=())
    with pytest.raises(ValueError, match=r"`groups` names 'z'"):
        _model(groups=[["a", "z"]])
    with pytest.raises(ValueError, match=r"criterion.*'closest'"):
        SelectiveSharing("closest")
    with pytest.raises(ValueError, match=r"`rank` 99 is larger than a tensor of shape \(6, 4\)"):
        tt_point(np.ones((6, 4)), rank=99)
    x, y = _problem(n=64)
    trainer = _trainer(_model())
    with pytest.raises(ValueError, match=r"`rank` 99 is larger than a tensor of shape \(8, 2, 8\)"):
        trainer.fit(x, y, epochs=1, callbacks=[SelectiveSharing(rank=99)], verbose=0)
    assert int(trainer.epoch.numpy()) == 0  # refused before training


def test_a_branch_two_tasks_share_gets_their_weighted_gradient_under_a_strategy_that_weights_heads():
    """GradNorm weights the heads: a branch of two tasks gets the gradient of their
    weighted losses (its first step's weights are 1), as a plain tape gives it."""
    tasks = one_vs_all_tasks(["a", "b", "c"])
    keras.utils.set_random_seed(2)
    model = zoo.build("selective_sharing", tasks=tasks, groups=[["a", "b"]], trunk="dense", shared_units=16,
                      branch_units=(8, 4), input_shape=(6,))
    rng = np.random.default_rng(3)
    x = rng.normal(size=(32, 6)).astype("float32")
    y = {t.name: rng.integers(0, 2, 32) for t in tasks}
    branch = model.get_layer("branch_a")
    with tf.GradientTape() as tape:
        out = model(x, training=True)
        loss = tasks[0].loss(y["a"], out["a"]) + tasks[1].loss(y["b"], out["b"])
    want = [g.numpy() for g in tape.gradient(loss, branch.trainable_variables)]
    before = [v.numpy().copy() for v in branch.trainable_variables]
    Trainer(model, tasks=tasks, weighting="gradnorm", optimizer=keras.optimizers.SGD(1.0), shuffle=False).fit(
        x, y, epochs=1, batch_size=32, verbose=0)
    for b, v, g in zip(before, branch.trainable_variables, want):
        np.testing.assert_allclose(b - v.numpy(), g, rtol=1e-4, atol=1e-6, err_msg=v.path)
