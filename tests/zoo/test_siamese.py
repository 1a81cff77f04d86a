"""Siamese pipes (paper 003): weight sharing, auxiliary loss, pair targets."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from mtl_tf.data import load_numpy
from mtl_tf.tasks import Task
from mtl_tf.weighting import get as get_weighting
from tests.helpers import pair_batch
from training import Trainer
from training.reproduce.siamese import draw_pairs
from zoo.siamese import aux_weighting


def _pipe(model, name):
    return model.get_layer(name)


def fixed(weights):
    return get_weighting("fixed", weights=weights)


@pytest.mark.parametrize("pipe", ["shallow", "deep", "conv"])
def test_weight_sharing_has_one_pipe_that_reads_both_images(pipe):
    keras.utils.set_random_seed(0)
    model = zoo.build("siamese", pipe=pipe, weight_sharing=True)
    names = [layer.name for layer in model.layers]
    assert "pipe" in names and "pipe_a" not in names and "pipe_b" not in names
    shared = _pipe(model, "pipe")
    classifier = model.get_layer("classifier")
    assert len(model.trainable_weights) == len(shared.trainable_weights) + len(classifier.trainable_weights)
    x, _ = pair_batch(8)
    out = model(x)
    np.testing.assert_allclose(out["digit_a"], shared(x[:, 0] / 255.0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["digit_b"], shared(x[:, 1] / 255.0), rtol=1e-5, atol=1e-5)
    swapped = model(x[:, ::-1])
    np.testing.assert_allclose(swapped["digit_a"], out["digit_b"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pipe", ["shallow", "deep", "conv"])
def test_without_weight_sharing_two_pipes_of_the_same_shapes(pipe):
    keras.utils.set_random_seed(0)
    model = zoo.build("siamese", pipe=pipe, weight_sharing=False)
    pipe_a, pipe_b = _pipe(model, "pipe_a"), _pipe(model, "pipe_b")
    assert [w.shape for w in pipe_a.weights] == [w.shape for w in pipe_b.weights]
    assert not np.allclose(pipe_a.weights[0], pipe_b.weights[0])  # initialised apart
    shared = zoo.build("siamese", pipe=pipe, weight_sharing=True)
    assert model.count_params() == 2 * pipe_a.count_params() + model.get_layer("classifier").count_params()
    assert model.count_params() - shared.count_params() == pipe_a.count_params()
    x, _ = pair_batch(8)
    out = model(x)
    np.testing.assert_allclose(out["digit_a"], pipe_a(x[:, 0] / 255.0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["digit_b"], pipe_b(x[:, 1] / 255.0), rtol=1e-5, atol=1e-5)


def _dense_params(widths):
    return sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))


def _conv_params(channels, kernel=3):
    return sum(kernel * kernel * a * b + b for a, b in zip(channels[:-1], channels[1:]))


# The authors' layer lists (architectures.py), counted here as PyTorch would.
AUTHORS = {
    "shallow": (_dense_params((196, 500, 10)), _dense_params((20, 50, 2))),
    "deep": (_dense_params((196, 300, 100, 70, 30, 20, 10)), _dense_params((20, 30, 20, 10, 2))),
    "conv": (_conv_params((1, 16, 32, 64, 64)) + _dense_params((64, 100, 10)), _dense_params((20, 32, 2))),
}


@pytest.mark.parametrize("pipe", ["shallow", "deep", "conv"])
@pytest.mark.parametrize("weight_sharing", [False, True])
def test_parameter_counts_equal_the_authors_architectures(pipe, weight_sharing):
    pipe_params, classifier_params = AUTHORS[pipe]
    model = zoo.build("siamese", pipe=pipe, weight_sharing=weight_sharing)
    assert model.count_params() == (1 if weight_sharing else 2) * pipe_params + classifier_params
    # Without weight sharing both fully connected models have about 200,000, as the paper says.
    if pipe != "conv" and not weight_sharing:
        assert 190_000 <= model.count_params() <= 210_000


def test_the_conv_pipe_reaches_64_features_after_its_4x4_pool():
    pipe = zoo.build("siamese", pipe="conv").get_layer("pipe")
    pool = [layer for layer in pipe.layers if isinstance(layer, keras.layers.MaxPooling2D)][-1]
    assert pool.pool_size == (4, 4) and tuple(pool.output.shape[1:]) == (1, 1, 64)


def test_other_widths_stay_reachable():
    model = zoo.build("siamese", pipe="deep", weight_sharing=False, pipe_units=(300, 100, 60, 40, 20),
                      classifier_units=(50, 25))
    assert model.count_params() == 2 * _dense_params((196, 300, 100, 60, 40, 20, 10)) + _dense_params((20, 50, 25, 2))


def test_pytorch_default_initialisation_bounds():
    keras.utils.set_random_seed(0)
    first = _pipe(zoo.build("siamese", pipe="shallow"), "pipe").layers[1]  # 196 -> 500
    bound = 1 / np.sqrt(196)
    for weights in (first.kernel, first.bias):
        values = np.asarray(weights)
        assert np.abs(values).max() <= bound and np.abs(values).max() > 0.95 * bound


def _gradients(model, weighting, x, y):
    tasks = (Task("compare", 2), Task("digit_a", 10), Task("digit_b", 10))
    weighting = weighting.build(3)
    with tf.GradientTape() as tape:
        out = model(x, training=True)
        losses = tf.stack([t.loss(y[t.name], out[t.name]) for t in tasks])
        total = weighting.total_loss(losses)
    return tape.gradient(total, model.trainable_variables)


def _reference_gradients(model, x, y, w):
    """The paper's loss written out with Keras's own cross-entropy, independent of Task
    and of the weighting code: (1 - w) L_compare + w (L_a + L_b) / 2."""
    xent = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        out = model(x, training=True)
        total = (1 - w) * xent(y["compare"], out["compare"])
        if w:
            total += w * (xent(y["digit_a"], out["digit_a"]) + xent(y["digit_b"], out["digit_b"])) / 2
    return tape.gradient(total, model.trainable_variables)


@pytest.mark.parametrize("weight_sharing", [True, False])
def test_aux_loss_weight_zero_gives_the_aux_heads_no_gradient(weight_sharing):
    keras.utils.set_random_seed(0)
    model = zoo.build("siamese", pipe="shallow", weight_sharing=weight_sharing)
    x, y = pair_batch(64)
    for w in (0.0, 0.5):
        got, want = _gradients(model, aux_weighting(w), x, y), _reference_gradients(model, x, y, w)
        for g, r in zip(got, want):
            if r is None:
                assert g is None or not np.any(g)
            else:
                np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-7)
    off, on = _gradients(model, aux_weighting(0.0), x, y), _gradients(model, aux_weighting(0.5), x, y)
    # The auxiliary losses do reach the pipes (not the classifier) when switched on.
    pipe_vars = len(model.trainable_variables) - len(model.get_layer("classifier").trainable_variables)
    assert any(not np.allclose(a, b) for a, b in zip(on[:pipe_vars], off[:pipe_vars]))

    # Through the Trainer: aux_loss_weight 0 trains exactly as the comparison task alone.
    def one_epoch(weighting, tasks):
        keras.utils.set_random_seed(1)
        m = zoo.build("siamese", pipe="shallow", weight_sharing=weight_sharing)
        Trainer(m, tasks=tasks, weighting=weighting, learning_rate=1e-3).fit(
            x, {t: y[t] for t in tasks}, epochs=1, batch_size=32, verbose=0)
        return m.get_weights()

    all_tasks = {"compare": 2, "digit_a": 10, "digit_b": 10}
    for a, b in zip(one_epoch(aux_weighting(0.0), all_tasks), one_epoch("equal", {"compare": 2})):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_aux_weighting_is_the_papers_weighted_average():
    weights = aux_weighting(0.3).build(3).loss_weights(tf.ones(3)).numpy()
    np.testing.assert_allclose(weights, [0.7, 0.15, 0.15])
    for bad in (-0.1, 1.5, "half", True):
        with pytest.raises(ValueError, match="aux_loss_weight"):
            aux_weighting(bad)


def test_pair_targets_agree_with_the_digit_labels_and_the_mnist_images():
    (x, y), (xv, yv), (xt, yt) = draw_pairs(run_seed=3, n=500)
    for labels in (y, yv, yt):
        np.testing.assert_array_equal(labels["compare"], (labels["digit_a"] <= labels["digit_b"]))
    for split, pairs, labels in (("train", x, y), ("train", xv, yv), ("test", xt, yt)):
        images, digit = load_numpy("mnist", split)
        pooled = images.reshape(-1, 14, 2, 14, 2).astype(np.float32).mean(axis=(2, 4))
        lookup = {row.tobytes(): int(d) for row, d in zip(pooled, digit)}
        for side, task in ((0, "digit_a"), (1, "digit_b")):
            found = [lookup[p.tobytes()] for p in pairs[:, side]]
            np.testing.assert_array_equal(found, labels[task])
    # Training and validation pairs use disjoint MNIST images; each run draws afresh.
    train_images = {p.tobytes() for p in x.reshape(-1, 14, 14)}
    assert not train_images & {p.tobytes() for p in xv.reshape(-1, 14, 14)}
    other = draw_pairs(run_seed=4, n=500)[0][0]
    assert not np.array_equal(other, x)


@pytest.mark.parametrize("kwargs, message", [
    ({"pipe": "rnn"}, r"pipe='rnn'"),
    ({"input_shape": (3, 14, 14)}, r"input_shape=\(3, 14, 14\)"),
    ({"input_shape": (2, 8, 8)}, r"at least 14 x 14"),
    ({"pipe_units": ()}, r"pipe_units=\(\)"),
    ({"classifier_units": (0,)}, r"classifier_units=\(0,\)"),
    ({"tasks": {"compare": 2, "digit": 10}}, r"tasks="),
    ({"weight_sharing": "yes"}, r"weight_sharing='yes'"),
])
def test_bad_arguments_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        zoo.build("siamese", **kwargs)
