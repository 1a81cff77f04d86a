"""One Trainer step against a plain `tf.GradientTape` and a NumPy combination of the
per-task gradients, written here from the papers' equations: the update a strategy makes
(SGD with learning rate 1, so the update is the gradient) must equal the reference."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtl_tf.tasks import Task
from training import Trainer

N = 24
HEADS = {2: (("a", 3), ("b", 2)), 3: (("a", 3), ("b", 2), ("c", 4))}


def _model(regularized=False, heads=(("a", 3), ("b", 2))):
    """Heads on a trunk, built by hand; optionally with an L2 penalty on the trunk."""
    keras.utils.set_random_seed(3)
    reg = keras.regularizers.L2(0.05) if regularized else None
    inputs = keras.Input((6,), name="inputs")
    trunk = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="tanh"),
                              keras.layers.Dense(5, activation="tanh", kernel_regularizer=reg)],
                             name="trunk")
    z = trunk(inputs)
    outputs = {name: keras.Sequential([keras.Input((5,)), keras.layers.Dense(width)],
                                      name=f"head_{name}")(z) for name, width in heads}
    return keras.Model(inputs, outputs)


def _data(tasks=2):
    rng = np.random.default_rng(11)
    x = rng.normal(size=(N, 6)).astype("float32")
    a = rng.integers(0, 3, N)
    b = rng.integers(0, 2, N)
    a[:5] = -1  # unlabelled for task a
    b[-7:] = -1
    c = rng.integers(0, 4, N)
    return x, {"a": a, "b": b, **({"c": c} if tasks == 3 else {})}


def _xent(labels, logits):
    """Masked mean cross-entropy over the labelled examples, written out."""
    labels = np.asarray(labels)
    mask = tf.constant(labels >= 0, tf.float32)
    log_p = tf.nn.log_softmax(logits)
    picked = tf.gather(log_p, np.maximum(labels, 0), batch_dims=1)
    return -tf.reduce_sum(picked * mask) / tf.reduce_sum(mask)


def _trainer_update(model, weighting, x, y, tasks=None, shuffle=True):
    before = [v.numpy().copy() for v in model.trainable_variables]
    trainer = Trainer(model, tasks=tasks, weighting=weighting, shuffle=shuffle,
                      optimizer=keras.optimizers.SGD(learning_rate=1.0))
    trainer.fit(x, y, epochs=1, batch_size=N, verbose=0)
    return [b - v.numpy() for b, v in zip(before, model.trainable_variables)], trainer


# --- NumPy combinations, from the papers ---------------------------------------------------
def _pcgrad(g):
    g1, g2 = g
    p1 = g1 - min(g1 @ g2, 0) / (g2 @ g2) * g2
    p2 = g2 - min(g2 @ g1, 0) / (g1 @ g1) * g1
    return p1 + p2


def _mgda(g):
    g1, g2 = g
    alpha = np.clip((g2 - g1) @ g2 / np.sum((g1 - g2) ** 2), 0, 1)
    return 2 * (alpha * g1 + (1 - alpha) * g2)


def _cagrad(g, c=0.5):
    g0 = g.mean(axis=0)
    root_phi = c * np.linalg.norm(g0)
    a = np.linspace(0, 1, 200_001)[:, None]
    w = np.hstack([a, 1 - a])
    gw = w @ g
    best = np.argmin(gw @ g0 + root_phi * np.linalg.norm(gw, axis=1))
    d = g0 + root_phi * gw[best] / np.linalg.norm(gw[best])
    return 2 * d / (1 + c**2)


STRATEGIES = {"pcgrad": ({}, _pcgrad), "mgda": ({}, _mgda), "cagrad": ({}, _cagrad)}


@pytest.mark.parametrize("mode", ["representation", "parameters"])
@pytest.mark.parametrize("name", sorted(STRATEGIES))
@pytest.mark.parametrize("regularized", [False, True])
def test_gradient_level_step_equals_the_reference(name, mode, regularized):
    kwargs, combine = STRATEGIES[name]
    x, y = _data()
    model = _model(regularized)
    trunk, heads = model.get_layer("trunk"), [model.get_layer("head_a"), model.get_layer("head_b")]
    shared = trunk.trainable_variables
    with tf.GradientTape(persistent=True) as tape:
        if mode == "representation":
            z = trunk(x, training=True)
            losses = [_xent(y["a"], heads[0](z)), _xent(y["b"], heads[1](z))]
        else:
            out = model(x, training=True)
            losses = [_xent(y["a"], out["a"]), _xent(y["b"], out["b"])]
        penalty = tf.add_n(model.losses) if model.losses else None
    if mode == "representation":
        g = np.stack([tape.gradient(loss, z).numpy().ravel() for loss in losses]).astype(np.float64)
        d = combine(g).reshape(z.shape).astype(np.float32)
        shared_grads = tape.gradient(z, shared, output_gradients=tf.constant(d))
    else:
        per_task = [tape.gradient(loss, shared) for loss in losses]
        g = np.stack([np.concatenate([v.numpy().ravel() for v in grads]) for grads in per_task])
        d = combine(g.astype(np.float64)).astype(np.float32)
        sizes = np.cumsum([0] + [int(np.prod(v.shape)) for v in shared])
        shared_grads = [d[sizes[i]:sizes[i + 1]].reshape(v.shape) for i, v in enumerate(shared)]
    extra = [np.zeros(v.shape) for v in shared]
    if penalty is not None:
        extra = [e if g is None else g for e, g in zip(extra, tape.gradient(penalty, shared))]
    want = {id(v): np.asarray(s) + np.asarray(e) for v, s, e in zip(shared, shared_grads, extra)}
    for head, loss in zip(heads, losses):  # each head: its own task's gradient, unweighted
        want.update({id(v): gr.numpy() for v, gr in zip(head.trainable_variables,
                                                        tape.gradient(loss, head.trainable_variables))})
    got, _ = _trainer_update(model, {"class_name": name, "config": {**kwargs, "mode": mode}}, x, y)
    assert len(got) == len(want)
    for v, update in zip(model.trainable_variables, got):
        np.testing.assert_allclose(update, want[id(v)], rtol=2e-4, atol=2e-6, err_msg=v.path)


@pytest.mark.parametrize("regularized", [False, True])
def test_loss_level_steps_equal_the_reference(regularized):
    """Fixed weights and uncertainty weighting, one backward pass over `model(x)`."""
    x, y = _data()
    for weighting in ({"class_name": "fixed", "config": {"weights": [0.3, 1.7]}}, "uncertainty"):
        model = _model(regularized)
        with tf.GradientTape() as tape:
            out = model(x, training=True)
            la, lb = _xent(y["a"], out["a"]), _xent(y["b"], out["b"])
            penalty = tf.add_n(model.losses) if model.losses else 0.0
            # Kendall et al. with s = 0 at the start: 0.5 L_a + 0.5 L_b (+ 0.5 s terms, constant here)
            total = (0.3 * la + 1.7 * lb if isinstance(weighting, dict) else 0.5 * (la + lb)) + penalty
        want = tape.gradient(total, model.trainable_variables)
        got, trainer = _trainer_update(model, weighting, x, y)
        for v, update, reference in zip(model.trainable_variables, got, want):
            np.testing.assert_allclose(update, reference, rtol=2e-4, atol=2e-6, err_msg=v.path)
        if weighting == "uncertainty":  # s moved by 0.5 (1 - L_t) exp(-0) with rate 1
            np.testing.assert_allclose(-trainer.weighting.log_variance.numpy(),
                                       [0.5 * (1 - la.numpy()), 0.5 * (1 - lb.numpy())], rtol=1e-4)


def test_binary_and_regression_tasks_train_with_their_masks():
    """A multi-class, a binary and a regression task, each with unlabelled examples (-1 or
    NaN): the step equals the reference, and a few epochs lower every loss."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(N, 6)).astype("float32")
    y = {"a": rng.integers(0, 3, N), "b": (x[:, 0] > 0).astype("int64"),
         "c": np.stack([x[:, 1] + x[:, 2], x[:, 3]], axis=1).astype("float32")}
    y["a"][:4], y["b"][4:9] = -1, -1
    y["c"][-6:, 1] = np.nan  # a NaN anywhere in a target masks the example
    tasks = [Task("a", 3), Task("b", 1, kind="binary"), Task("c", 2, kind="regression")]
    model = _model(heads=(("a", 3), ("b", 1), ("c", 2)))
    with tf.GradientTape() as tape:
        out = model(x, training=True)
        mb = y["b"] >= 0
        lb = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
            labels=tf.constant(y["b"][mb], tf.float32), logits=tf.boolean_mask(out["b"][:, 0], mb)))
        mc = ~np.isnan(y["c"]).any(axis=1)
        lc = tf.reduce_mean(tf.square(tf.boolean_mask(out["c"], mc) - y["c"][mc]))
        total = 2.0 * _xent(y["a"], out["a"]) + lb + 0.5 * lc
    want = tape.gradient(total, model.trainable_variables)
    got, trainer = _trainer_update(model, {"class_name": "fixed", "config": {"weights": [2.0, 1.0, 0.5]}},
                                   x, y, tasks=tasks)
    for v, update, reference in zip(model.trainable_variables, got, want):
        np.testing.assert_allclose(update, reference, rtol=2e-4, atol=2e-6, err_msg=v.path)
    before = trainer.evaluate((x, y))
    history = trainer.fit(x, y, epochs=20, batch_size=8, verbose=0)
    after = trainer.evaluate((x, y))
    assert {"b_accuracy", "c_mse", "c_loss"} <= set(history.history)
    for task in "abc":
        assert after[f"{task}_loss"] < before[f"{task}_loss"], (task, before, after)


@pytest.mark.parametrize("mode", ["representation", "parameters"])
def test_a_gradient_level_step_under_mirrored_strategy_equals_one_device(tmp_path, mode):
    """Two replicas, each with half the batch: the PCGrad step equals the one-device step
    (the Gram matrix, or the per-task gradients, are all-reduced), and differs from
    combining each replica's own gradients, which the test computes too: on this batch
    the second half's task gradients conflict where the whole batch's do not."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    weighting = {"class_name": "pcgrad", "config": {"mode": mode}}
    out = tmp_path / "mirrored.npz"
    result = subprocess.run([sys.executable, "-m", "tests.training.mirrored_step_script", str(out),
                             json.dumps(weighting)], cwd=Path(__file__).resolve().parents[2],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = np.load(out)
    x, y = _data()
    one_device, _ = _trainer_update(_model(), weighting, x, y)
    model = _model()
    mirrored = [saved[f"initial{i}"] - saved[f"final{i}"] for i in range(len(model.trainable_variables))]
    for v, got, want in zip(model.trainable_variables, mirrored, one_device):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-6, err_msg=v.path)

    if mode == "representation":  # what a per-replica combination would have given
        trunk, heads = model.get_layer("trunk"), [model.get_layer("head_a"), model.get_layer("head_b")]
        counts = [np.sum(y["a"] >= 0), np.sum(y["b"] >= 0)]
        local = [np.zeros(v.shape) for v in trunk.trainable_variables]
        for half in (slice(0, N // 2), slice(N // 2, N)):
            with tf.GradientTape(persistent=True) as tape:
                z = trunk(x[half], training=True)
                losses = [_xent(y[t][half], head(z)) * np.sum(y[t][half] >= 0) / c
                          for t, head, c in zip("ab", heads, counts)]
            g = np.stack([tape.gradient(loss, z).numpy().ravel() for loss in losses]).astype(np.float64)
            d = _pcgrad(g).reshape(z.shape).astype(np.float32)
            for k, grad in enumerate(tape.gradient(z, trunk.trainable_variables, output_gradients=tf.constant(d))):
                local[k] += grad.numpy()
        assert max(np.abs(a - b).max() for a, b in zip(local, mirrored)) > 1e-4


def test_modo_steps_on_three_disjoint_parts_of_the_batch():
    """The trainer's split for the several-sample strategies: part j holds the examples
    i mod 3 == j, each part's task loss is its labelled examples' mean; one MoDo step
    (lambda from 1/2, gamma 0.1, rho 0.1) on those gradients, written here."""
    x, y = _data()
    model = _model()
    trunk = model.get_layer("trunk")
    heads = {t: model.get_layer(f"head_{t}") for t in "ab"}
    shared = trunk.trainable_variables
    parts = []
    for j in range(3):
        rows = np.arange(N) % 3 == j
        with tf.GradientTape(persistent=True) as tape:
            z = trunk(x[rows], training=True)
            losses = [_xent(y[t][rows], heads[t](z)) for t in "ab"]
        parts.append(np.stack([np.concatenate([g.numpy().ravel() for g in tape.gradient(loss, shared)])
                               for loss in losses]).astype(np.float64))
    lam = np.full(2, 0.5)
    lam = lam - 0.1 * (parts[0] @ parts[1].T @ lam + 0.1 * lam)
    lam = np.maximum(lam - (lam.sum() - 1) / 2, 0)  # the simplex projection, two tasks
    lam /= lam.sum()
    d = 2 * lam @ parts[2]
    sizes = np.cumsum([0] + [int(np.prod(v.shape)) for v in shared])
    want = {id(v): d[sizes[i]:sizes[i + 1]].reshape(v.shape) for i, v in enumerate(shared)}
    with tf.GradientTape(persistent=True) as tape:
        out = model(x, training=True)
        losses = {t: _xent(y[t], out[t]) for t in "ab"}
    for t, head in heads.items():
        want.update({id(v): g.numpy() for v, g in zip(head.trainable_variables,
                                                      tape.gradient(losses[t], head.trainable_variables))})
    got, trainer = _trainer_update(model, "modo", x, y, shuffle=False)  # the parts by position
    np.testing.assert_allclose(trainer.weighting.weights.numpy(), lam, rtol=1e-5)
    for v, update in zip(model.trainable_variables, got):
        np.testing.assert_allclose(update, want[id(v)], rtol=2e-4, atol=2e-6, err_msg=v.path)


# One of each kind in the default suite (a Gram solver with and without state, per-weight
# state, a split batch, a second forward pass, a random stream); the rest in test-slow.
ZOO = {"default": ["upgrad", "nash_mtl", "gradvac", "moco", "modo", "famo", "rlw"],
       "rest": ["imtl_g", "imtl", "aligned_mtl", "dualproj", "fairgrad", "config", "cagrad", "mgda",
                "gls", "stch", "db_mtl", "excess_mtl", "graddrop", "sdmgrad", "pcd", "cr_mogm"],
       "three tasks": ["krum", "trimmed_mean"]}


@pytest.mark.parametrize("group", ["default", pytest.param("rest", marks=pytest.mark.slow),
                                   pytest.param("three tasks", marks=pytest.mark.slow)])
def test_every_zoo_strategy_steps_under_mirrored_strategy_as_on_one_device(tmp_path, group):
    """The zoo's strategies, each one step with two replicas of half the batch each (one
    process for all): the update equals the one-device update. Gram strategies see the
    all-reduced Gram matrix, loss strategies the global losses (FAMO also the global
    losses after the step, RLW the same draw on both replicas)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "mirrored.npz"
    tasks = 3 if group == "three tasks" else 2
    result = subprocess.run([sys.executable, "-m", "tests.training.mirrored_step_script", str(out),
                             json.dumps(ZOO[group]), "mirrored", str(tasks)],
                            cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = np.load(out)
    x, y = _data(tasks)
    for j, name in enumerate(ZOO[group]):
        model = _model(heads=HEADS[tasks])
        one_device, trainer = _trainer_update(model, name, x, y, shuffle=False)
        for k, (v, want) in enumerate(zip(model.trainable_variables, one_device)):
            got = saved[f"{j}_initial{k}"] - saved[f"{j}_final{k}"]
            np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-6, err_msg=f"{name}: {v.path}")
        assert any(np.abs(u).max() > 1e-3 for u in one_device), name  # it moved


def test_a_gradient_level_step_on_two_workers_equals_one_device(tmp_path):
    """Two processes of one MultiWorkerMirroredStrategy cluster on loopback, each with half
    the batch: their PCGrad step equals the one-device step to rounding, because the Gram
    matrix is all-reduced before the combination. Only one step: after it the weights
    differ by rounding, and a projection whose dot product is that close to zero could then
    go the other way (the CLI's two-worker test compares whole runs)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from training.distributed import free_ports, tf_config

    weighting = {"class_name": "pcgrad", "config": {}}
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = [subprocess.Popen(
        [sys.executable, "-m", "tests.training.mirrored_step_script", str(tmp_path / f"w{i}.npz"),
         json.dumps(weighting), "multiworker"], cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "TF_CONFIG": tf_config(workers, i)}, stderr=subprocess.PIPE) for i in range(2)]
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err.decode()[-3000:]
    x, y = _data()
    one_device, _ = _trainer_update(_model(), weighting, x, y)
    # The premise: the projection's test is far from its boundary on this batch (the
    # cosine is 5e-3, rounding moves it by about 1e-7), so the comparison is tight and
    # cannot flake. Combining each worker's own half would project where the whole batch
    # does not (the mirrored test above computes that update).
    model = _model()
    with tf.GradientTape(persistent=True) as tape:
        z = model.get_layer("trunk")(x, training=True)
        losses = [_xent(y[t], model.get_layer(f"head_{t}")(z)) for t in "ab"]
    g = np.stack([tape.gradient(loss, z).numpy().ravel() for loss in losses])
    cosine = g[0] @ g[1] / np.linalg.norm(g[0]) / np.linalg.norm(g[1])
    assert abs(cosine) > 1e-3, cosine
    for i in range(2):
        saved = np.load(tmp_path / f"w{i}.npz")
        for k, (v, want) in enumerate(zip(model.trainable_variables, one_device)):
            np.testing.assert_allclose(saved[f"initial{k}"] - saved[f"final{k}"], want, rtol=2e-4,
                                       atol=2e-6, err_msg=f"worker {i}: {v.path}")
