"""Per-task gradient taps against plain per-task tape.gradient; masked losses."""

import numpy as np
import pytest
import tensorflow as tf

import zoo
from mtl_tf.tasks import Task
from tests.helpers import two_task_batch
from training import Trainer


@pytest.fixture(scope="module")
def setup():
    model = zoo.build("hard_sharing", tasks={"mnist": 10, "fashion_mnist": 10},
                      input_shape=(28, 28, 1), units=(32,))
    x, y = two_task_batch(64)
    # Every example labelled for both tasks, so both gradients are dense.
    y = {"mnist": np.abs(y["mnist"]) % 10, "fashion_mnist": np.abs(y["fashion_mnist"]) % 10}
    return Trainer(model), x, y


def _reference(trainer, x, y, sources_of):
    """Per task: tape.gradient of that task's loss alone."""
    result = []
    for task in trainer.tasks:
        with tf.GradientTape() as tape:
            z, h, copies, outputs, _ = trainer.parts.forward(tf.constant(x))
            loss = task.loss(y[task.name], outputs[task.name])
        result.append(tape.gradient(loss, sources_of(z, h)))
    return result


def test_representation_gradients_equal_per_task_tape_gradients(setup):
    trainer, x, y = setup
    rep = trainer.task_gradients(x, y, "representation")
    reference = _reference(trainer, x, y, lambda z, h: z)
    assert rep.shape == (2, len(x), 32)
    for t in range(2):
        np.testing.assert_allclose(rep[t], reference[t], rtol=1e-5, atol=1e-7)


def test_last_layer_gradients_equal_per_task_tape_gradients(setup):
    trainer, x, y = setup
    kernel, bias = trainer.task_gradients(x, y, "last_layer")
    layer = trainer.parts.last_dense
    reference = _reference(trainer, x, y, lambda z, h: [layer.kernel, layer.bias])
    for t in range(2):
        np.testing.assert_allclose(kernel[t], reference[t][0], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(bias[t], reference[t][1], rtol=1e-4, atol=1e-6)


def test_shared_weight_gradients_equal_per_task_tape_gradients(setup):
    trainer, x, y = setup
    shared = trainer.task_gradients(x, y, "shared")
    variables = trainer.parts.shared_variables
    reference = _reference(trainer, x, y, lambda z, h: variables)
    for t in range(2):
        for got, want in zip(shared[t], reference[t]):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_masked_loss_ignores_unlabelled_examples():
    task = Task("digits", 10)
    logits = tf.Variable(tf.random.stateless_normal([6, 10], seed=[1, 2]))
    labels = tf.constant([3, -1, 5, -1, -1, 0])
    with tf.GradientTape() as tape:
        loss = task.loss(labels, logits)
    grad = tape.gradient(loss, logits).numpy()
    assert np.all(grad[[1, 3, 4]] == 0) and np.all(np.abs(grad[[0, 2, 5]]).sum(axis=1) > 0)
    labelled = tf.gather(logits, [0, 2, 5])
    np.testing.assert_allclose(loss, task.loss(tf.constant([3, 5, 0]), labelled), rtol=1e-6)
    # An explicit mask combines with the label's own; a batch with no labels costs 0.
    masked = task.loss(labels, logits, mask=tf.constant([1, 1, 0, 1, 1, 1]))
    np.testing.assert_allclose(masked, task.loss(tf.constant([3, 0]), tf.gather(logits, [0, 5])),
                               rtol=1e-6)
    assert float(task.loss(-tf.ones([6], tf.int32), logits)) == 0.0


def test_regression_targets_mask_nan_rows():
    task = Task("depth", 2, kind="regression")
    pred = tf.constant([[1.0, 1.0], [5.0, 5.0], [0.0, 2.0]])
    target = tf.constant([[0.0, 1.0], [np.nan, np.nan], [0.0, 0.0]])
    np.testing.assert_allclose(task.loss(target, pred), (0.5 + 2.0) / 2, rtol=1e-6)
    assert task.metric == "mse" and not task.higher_is_better
