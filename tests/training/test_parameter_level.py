"""Gradient-level strategies on a model without `trunk` / `head_<task>` parts (Siamese
pipes): per-task gradients of every variable, combined over the variables tasks share."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from mtl_tf import weighting
from tests.helpers import pair_batch
from training import Trainer


class _Sum(weighting.GradientLevel):
    """Adds the per-task gradients: must train exactly as the summed loss does."""

    weights_heads = True

    def combine(self, grads, losses):
        return tf.reduce_sum(grads, axis=0), tf.ones([self.num_tasks])


def _train(strategy, weight_sharing=True, epochs=1, batch_size=64):
    keras.utils.set_random_seed(0)
    model = zoo.build("siamese", pipe="shallow", weight_sharing=weight_sharing)
    x, y = pair_batch()
    trainer = Trainer(model, weighting=strategy, learning_rate=1e-3)
    history = trainer.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0)
    return model, trainer, history


@pytest.mark.parametrize("weight_sharing", [True, False])
def test_summed_per_task_gradients_equal_the_summed_loss(weight_sharing):
    combined, _, _ = _train(_Sum(mode="parameters"), weight_sharing)
    summed, _, _ = _train("equal", weight_sharing)
    for a, b in zip(combined.get_weights(), summed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_the_combined_gradient_is_what_the_strategy_returns():
    """A strategy that keeps only the comparison's gradient of the shared pipe leaves the
    pipe as training on the comparison alone would, while the digit tasks' weights of 0
    keep nothing else from them."""

    class FirstTask(_Sum):
        def combine(self, grads, losses):
            return grads[0], tf.constant([1.0, 0.0, 0.0])

    first, _, _ = _train(FirstTask(mode="parameters"))
    keras.utils.set_random_seed(0)
    alone = zoo.build("siamese", pipe="shallow")
    x, y = pair_batch()
    Trainer(alone, tasks={"compare": 2}, learning_rate=1e-3).fit(
        x, {"compare": y["compare"]}, epochs=1, batch_size=64, verbose=0)
    for a, b in zip(first.get_weights(), alone.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["gradnorm", "pcgrad", "mgda", "cagrad"])
def test_library_strategies_train_a_siamese_model(name):
    model, trainer, history = _train(name, epochs=4, batch_size=16)
    losses = history.history["loss"]
    assert losses[-1] < 0.8 * losses[0], losses
    if name == "gradnorm":  # its weights moved off 1 and still sum to the task count
        weights = [history.history[f"weight_{t}"][-1] for t in ("compare", "digit_a", "digit_b")]
        assert abs(sum(weights) - 3) < 1e-3 and max(abs(w - 1) for w in weights) > 1e-3


@pytest.mark.parametrize("weight_sharing", [True, False])
def test_only_variables_two_tasks_reach_are_combined(weight_sharing):
    """With one pipe all three tasks reach it; with two, each pipe is reached by the
    comparison and its own digit. The classifier serves the comparison alone."""

    class Width(_Sum):
        def combine(self, grads, losses):
            self.width = int(grads.shape[1])
            return super().combine(grads, losses)

    strategy = Width(mode="parameters")
    model, _, _ = _train(strategy, weight_sharing)
    pipes = ["pipe"] if weight_sharing else ["pipe_a", "pipe_b"]
    assert strategy.width == sum(model.get_layer(p).count_params() for p in pipes)
