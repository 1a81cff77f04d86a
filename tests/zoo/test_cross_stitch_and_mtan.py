"""Cross-stitch units and MTAN's attention recomputed from their papers' equations with
the layers' own weights; where the graph cut falls (none for Cross-stitch, whose
gradient-level steps then combine the shared weights' gradients); bad arguments."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from mtl_tf.gradients import representation_gradients, shared_gradients
from mtl_tf.graph_cut import GraphCut

TASKS = {"a": 3, "b": 2, "c": 2}
RNG = np.random.default_rng(6)
X = RNG.normal(size=(8, 10)).astype("float32")
Y = {t: RNG.integers(0, n, 8) for t, n in TASKS.items()}


def _sub(model, name):
    """The output of layer `name` (its first output) as a function of the input."""
    return keras.Model(model.input, model.get_layer(name).output)(X)


def test_a_cross_stitch_unit_combines_the_tasks_activations():
    """x~_t = sum_s alpha_ts x_s (Eq. 1), alpha starting at 0.9 on the diagonal and the
    rest of each row split among the other tasks."""
    keras.utils.set_random_seed(0)
    model = zoo.build("cross_stitch", tasks=TASKS, input_shape=(10,), units=(6, 5))
    unit = model.get_layer("stitch_0")
    np.testing.assert_allclose(unit.alpha.numpy(), np.where(np.eye(3), 0.9, 0.05), rtol=1e-6)
    unit.alpha.assign(RNG.normal(size=(3, 3)).astype("float32"))
    before = np.stack([model.get_layer(f"{t}_dense_0")(X).numpy() for t in TASKS])
    want = np.einsum("ts,sbd->tbd", unit.alpha.numpy(), before)
    got = keras.Model(model.input, unit.output)(X)
    for i in range(3):
        np.testing.assert_allclose(np.asarray(got[i]), want[i], rtol=1e-5, atol=1e-6)
    # Only the chosen layers are stitched.
    once = zoo.build("cross_stitch", tasks=TASKS, input_shape=(10,), units=(6, 5), stitch_after=(1,))
    assert [layer.name for layer in once.layers if layer.name.startswith("stitch")] == ["stitch_1"]


def test_cross_stitch_has_no_cut_and_its_gradient_steps_combine_the_shared_weights():
    from training import Trainer

    model = zoo.build("cross_stitch", tasks=TASKS, input_shape=(10,), units=(6, 5))
    assert GraphCut.find(model, list(TASKS)) is None
    with pytest.warns(UserWarning, match=r"has no cut .*mode='parameters'"):
        trainer = Trainer(model, weighting="mgda")
    assert trainer.parts is None
    history = trainer.fit(X, Y, epochs=2, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_mtan_masks_each_stages_last_features_by_an_attention_of_its_first():
    """Stage 0: a_t = sigmoid-attention(u_0) * p_0; stage 1 reads [u_1, f_t(a^_t^0)]."""
    keras.utils.set_random_seed(1)
    model = zoo.build("mtan", tasks=TASKS, input_shape=(10,), units=(6, 4), head_units=())
    u0, p0 = _sub(model, "stage_0_first"), _sub(model, "stage_0_last")
    u1, p1 = _sub(model, "stage_1_first"), _sub(model, "stage_1_last")
    for t in TASKS:
        attention = model.get_layer(f"attention_{t}_0")
        kernels = [layer for layer in attention.layers]
        h = np.maximum(u0.numpy() @ kernels[0].kernel.numpy() + kernels[0].bias.numpy(), 0)
        mask = 1 / (1 + np.exp(-(h @ kernels[1].kernel.numpy() + kernels[1].bias.numpy())))
        attended0 = mask * p0.numpy()
        np.testing.assert_allclose(_sub(model, f"attended_{t}_0").numpy(), attended0, rtol=1e-5, atol=1e-6)
        adapt = model.get_layer(f"adapt_{t}_1")
        previous = np.maximum(attended0 @ adapt.kernel.numpy() + adapt.bias.numpy(), 0)
        source = np.concatenate([u1.numpy(), previous], axis=1)
        mask1 = keras.ops.convert_to_numpy(model.get_layer(f"attention_{t}_1")(source))
        np.testing.assert_allclose(_sub(model, f"attended_{t}_1").numpy(), mask1 * p1.numpy(), rtol=1e-5,
                                   atol=1e-6)


@pytest.mark.parametrize("shape", [(10,), (12, 12, 1)])
def test_mtans_cut_is_the_backbones_features_at_every_stage(shape):
    """Each task's gradient there, pushed into the backbone, is its own plain tape's."""
    keras.utils.set_random_seed(2)
    x = RNG.normal(size=(4, *shape)).astype("float32")
    model = zoo.build("mtan", tasks=TASKS, input_shape=shape, filters=(4, 6), units=(6, 4), head_units=())
    cut = GraphCut.find(model, list(TASKS))
    assert sorted(c._keras_history.operation.name for c in cut.cut_tensors) == [
        "stage_0_first", "stage_0_last", "stage_1_first", "stage_1_last"]
    y = {t: v[:4] for t, v in Y.items()}
    with tf.GradientTape(persistent=True) as tape:
        forward = cut.forward(tf.constant(x), training=False)
        losses = [tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y[t], forward.outputs[t]))
                  for t in TASKS]
        summed = tf.add_n(losses)
    pushed = shared_gradients(tape, forward.z, cut.shared_variables,
                              representation_gradients(tape, summed, forward.copies, list(TASKS)))
    for i, t in enumerate(TASKS):
        with tf.GradientTape() as plain:
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y[t], model(x)[t]))
        want = plain.gradient(loss, cut.shared_variables, unconnected_gradients="zero")
        for v, g, w in zip(cut.shared_variables, pushed[i], want):
            np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-4, atol=1e-6, err_msg=f"{t}: {v.path}")


@pytest.mark.parametrize("name, kwargs, message", [
    ("cross_stitch", {"stitch_after": (5,)}, r"stitch_after=\(5,\)"),
    ("cross_stitch", {"stitch_after": (-1,)}, r"stitch_after=\(-1,\)"),
    ("cross_stitch", {"alpha_self": 1.5}, r"alpha_self=1.5"),
    ("cross_stitch", {"network": "conv"}, r"network='conv'"),
    ("mtan", {"units": ()}, r"units=\(\)"),
    ("mtan", {"backbone": "rnn"}, r"backbone='rnn'"),
])
def test_bad_arguments_name_the_argument(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        zoo.build(name, tasks=TASKS, input_shape=(10,), **kwargs)
