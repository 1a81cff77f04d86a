"""Paper 001's family: DAE stacks sharing the supervised layers, the alternating update."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from mtl_tf.data import load_numpy
from training import Trainer
from zoo import evolving_dae
from zoo.evolving_dae import BinomialCorruption


def _data(n=64, labelled=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, 28, 28)).astype("float32")
    y = rng.integers(0, 10, size=n)
    y[labelled:] = -1  # the rest is unlabelled
    return x, y


def _model(corruption=0.0, seed=0, architecture="nn2"):
    keras.utils.set_random_seed(seed)
    return zoo.build("evolving_dae", architecture=architecture, corruption=corruption, seed=seed)


def _sigmoid_ce(logits, target):
    return np.mean(np.maximum(logits, 0) - logits * target + np.log1p(np.exp(-np.abs(logits))), axis=1)


def test_each_decoder_reconstructs_the_clean_layer_below_through_the_supervised_coder():
    model = _model()
    x, _ = _data(8)
    out = {k: v.numpy() for k, v in model(x, training=False).items()}
    w1, b1 = model.get_layer("hidden_1").get_weights()
    w2, b2 = model.get_layer("hidden_2").get_weights()
    h1 = np.tanh(x.reshape(8, -1) @ w1 + b1)
    np.testing.assert_allclose(out["reconstruction_1"][:, 1], x.reshape(8, -1), atol=1e-6)
    np.testing.assert_allclose(out["reconstruction_2"][:, 1], (h1 + 1) / 2, atol=1e-5)
    d1, c1 = model.get_layer("decoder_1").get_weights()
    np.testing.assert_allclose(out["reconstruction_1"][:, 0], h1 @ d1 + c1, atol=1e-4)
    d2, c2 = model.get_layer("decoder_2").get_weights()
    h2 = np.tanh(h1 @ w2 + b2)
    np.testing.assert_allclose(out["reconstruction_2"][:, 0], h2 @ d2 + c2, atol=1e-4)
    assert out["reconstruction_1"].shape == (8, 2, 784) and out["reconstruction_2"].shape == (8, 2, 60)


def test_a_reconstruction_step_moves_the_supervised_output():
    model = _model()
    x, y = _data()
    before = model(x, training=False)["classes"].numpy()
    tasks = evolving_dae.tasks(model)
    trainer = Trainer(model, tasks=tasks, weighting={"class_name": "fixed", "config": {"weights": [0, 1, 1]}},
                      optimizer=keras.optimizers.SGD(0.5), update="alternating", groups=evolving_dae.groups(model))
    trainer.fit(x, y, epochs=1, batch_size=64, verbose=0)
    # Only the reconstructions are weighted: the classifier's own layer never moved, yet
    # its output did, through the coding layers the DAEs share with it.
    assert np.abs(model(x, training=False)["classes"].numpy() - before).max() > 1e-3
    assert np.array_equal(model.get_layer("classes").get_weights()[0],
                          _model().get_layer("classes").get_weights()[0])


def test_the_alternating_step_equals_two_plain_sgd_steps():
    x, y = _data()
    lam_s, lr = 0.3, 0.2
    model = _model()
    reference = _model()  # the same initial weights
    tasks = evolving_dae.tasks(model)
    weights = [lam_s] + [1 - lam_s] * (len(tasks) - 1)
    Trainer(model, tasks=tasks, weighting={"class_name": "fixed", "config": {"weights": weights}},
            optimizer=keras.optimizers.SGD(lr), update="alternating", groups=evolving_dae.groups(model),
            shuffle=False).fit(x, y, epochs=1, batch_size=64, verbose=0)

    variables = reference.trainable_variables
    with tf.GradientTape() as tape:  # step 1: lambda_r * J_r on the whole batch
        out = reference(x, training=True)
        j_r = sum(np.float32(1 - lam_s) * tf.reduce_mean(tf.reduce_mean(
            tf.nn.sigmoid_cross_entropy_with_logits(labels=out[k][:, 1], logits=out[k][:, 0]), axis=1))
            for k in ("reconstruction_1", "reconstruction_2"))
    for v, g in zip(variables, tape.gradient(j_r, variables)):
        if g is not None:
            v.assign_sub(lr * g)
    labelled = y >= 0
    with tf.GradientTape() as tape:  # step 2: lambda_s * J_s on the labelled part only
        logits = reference(x[labelled], training=True)["classes"]
        j_s = lam_s * tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y[labelled], logits=logits))
    grads = tape.gradient(j_s, variables)
    assert grads[[v.path for v in variables].index("decoder_1/kernel")] is None  # J_s never reaches it
    for v, g in zip(variables, grads):
        if g is not None:
            v.assign_sub(lr * g)
    for ours, theirs in zip(model.weights, reference.weights):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-4, atol=1e-6)


def test_with_lambda_r_zero_the_alternating_step_is_a_supervised_step():
    x, y = _data()
    results = []
    for update, groups in (("alternating", True), ("joint", None)):
        model = _model()
        tasks = evolving_dae.tasks(model)
        Trainer(model, tasks=tasks, weighting={"class_name": "fixed", "config": {"weights": [1, 0, 0]}},
                optimizer=keras.optimizers.SGD(0.3), update=update,
                groups=evolving_dae.groups(model) if groups else None, shuffle=False
                ).fit(x, y, epochs=2, batch_size=32, verbose=0)
        results.append([w.numpy() for w in model.weights])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_unlabelled_examples_contribute_nothing_to_the_supervised_loss():
    x, y = _data()
    model = _model()
    trainer = Trainer(model, tasks=evolving_dae.tasks(model), update="alternating",
                      groups=evolving_dae.groups(model))
    logs = trainer.evaluate((x, y))
    other = y.copy()
    x2 = x.copy()
    x2[y < 0] = 1.0 - x2[y < 0]  # unlabelled images changed: the supervised loss is not
    assert trainer.evaluate((x2, other))["classes_loss"] == pytest.approx(logs["classes_loss"], rel=1e-6)
    assert trainer.evaluate((x2, other))["reconstruction_1_loss"] != pytest.approx(logs["reconstruction_1_loss"])


def test_corruption_masks_the_fraction_asked_for_and_only_in_training():
    layer = BinomialCorruption(0.3, seed=1)
    ones = np.ones((200, 500), "float32")
    masked = layer(ones, training=True).numpy()
    assert set(np.unique(masked)) == {0.0, 1.0}
    assert abs((masked == 0).mean() - 0.3) < 0.01
    assert np.array_equal(layer(ones, training=False).numpy(), ones)
    assert np.array_equal(layer(ones).numpy(), ones)


def test_a_short_real_run_learns_with_unlabelled_data_and_resumes_to_the_same_weights(tmp_path):
    images, labels = load_numpy("mnist", "train50k")
    x, y = (images[:3000] / 255.0).astype("float32"), labels[:3000].astype("int64")
    y[300:] = -1  # 300 labelled, 2,700 unlabelled
    test_x, test_y = load_numpy("mnist", "test")
    test = ((test_x[:2000] / 255.0).astype("float32"), test_y[:2000])

    def trainer(run_dir):
        model = _model(corruption=0.2, architecture="nn1")
        return Trainer(model, tasks=evolving_dae.tasks(model), run_dir=run_dir,
                       weighting={"class_name": "exp_sigma", "config": {"sigma": 2}},
                       optimizer=keras.optimizers.SGD(0.1), update="alternating",
                       groups=evolving_dae.groups(model), steps_per_execution=5)

    straight = trainer(tmp_path / "a")
    straight.fit(x, y, epochs=4, batch_size=100, verbose=0)
    assert straight.evaluate(test)["classes_accuracy"] > 0.6  # chance is 0.1
    first = trainer(tmp_path / "b")
    first.fit(x, y, epochs=2, batch_size=100, verbose=0)
    resumed = trainer(tmp_path / "b")
    resumed.fit(x, y, epochs=4, batch_size=100, verbose=0)
    for a, b in zip(straight.model.weights, resumed.model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("kwargs, message", [
    ({"corruption": 1.0}, r"`corruption` must be a fraction in \[0, 1\). Received: corruption=1.0"),
    ({"corruption": -0.1}, r"corruption=-0.1"),
    ({"architecture": "nn5"}, r"architecture='nn5'.*Known: \['nn1', 'nn2', 'nn3', 'nn4'\]"),
])
def test_bad_builder_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        zoo.build("evolving_dae", **kwargs)


def test_bad_update_arguments_are_named():
    model = _model()
    tasks = evolving_dae.tasks(model)
    with pytest.raises(ValueError, match=r"`groups` must name every task exactly once.*missing: \['classes'\]"):
        Trainer(model, tasks=tasks, update="alternating", groups=[["reconstruction_1", "reconstruction_2"]])
    with pytest.raises(ValueError, match=r"`update` must be 'joint' or 'alternating'. Received: update='alternate'"):
        Trainer(model, tasks=tasks, update="alternate")
    with pytest.raises(ValueError, match=r"alternating update takes a loss-level weighting.*'pcgrad'"):
        Trainer(model, tasks=tasks, weighting="pcgrad", update="alternating", groups=evolving_dae.groups(model))
