"""All-convolution nets (paper 000): joint output vs heads, transfer, the LR scheme."""

import keras
import numpy as np
import pytest

import zoo
from mtl_tf.data import pool
from mtl_tf.lr_schedules import StagedInverseTimeDecay
from mtl_tf.transfer import transfer
from tests.helpers import two_task_batch
from training import Trainer
from zoo.allconv import task_slice, transfer_to_single_task

TASKS = {"mnist": 10, "letters": 10, "fashion_mnist": 10}


def test_all_convolution_layers_only():
    model = zoo.build("allconv", tasks=TASKS)
    trunk = model.get_layer("trunk")
    kinds = {type(layer).__name__ for layer in trunk.layers}
    assert kinds == {"Conv2D", "BatchNormalization", "ReLU"}, kinds  # no pooling, no dense
    assert trunk.count_params() == 107_360
    original = zoo.build("allconv", tasks=TASKS, depth=3, batch_norm=False, dropout=0.5)
    kinds = [type(layer).__name__ for layer in original.get_layer("trunk").layers]
    assert kinds.count("Conv2D") == 8 and kinds.count("Dropout") == 2 and "BatchNormalization" not in kinds
    strides = [layer.strides for layer in trunk.layers if isinstance(layer, keras.layers.Conv2D)]
    assert strides.count((2, 2)) == 2
    head = model.get_layer("head_joint")
    assert [type(layer).__name__ for layer in head.layers] == ["Conv2D", "GlobalAveragePooling2D"]
    assert head.layers[0].kernel_size == (1, 1) and head.layers[0].filters == 30


def test_joint_padding_and_heads_agree_on_which_scores_a_task_owns():
    keras.utils.set_random_seed(0)
    joint = zoo.build("allconv", tasks=TASKS, dropout=0.0)
    heads = zoo.build("allconv_heads", tasks=TASKS, dropout=0.0)
    x = np.random.default_rng(0).random((6, 28, 28, 1), np.float32)
    # The pooled data's zero-padded one-hot puts task t's class c in column 10 t + c ...
    images = {t: (x[:2, ..., 0], np.array([3, 7])) for t in TASKS}
    pooled = pool(images)
    for i, task in enumerate(TASKS):
        start, stop = task_slice(joint, task)
        assert (start, stop) == (10 * i, 10 * i + 10)
        rows = pooled.source == i
        np.testing.assert_array_equal(pooled.joint[rows].argmax(1) - start, pooled.labels[task][rows])
        assert pooled.joint[rows][:, :start].sum() == 0 and pooled.joint[rows][:, stop:].sum() == 0
    # ... and the task's output of the joint model is those columns of the joint scores.
    out = joint(x)
    for task in TASKS:
        start, stop = task_slice(joint, task)
        np.testing.assert_array_equal(out[task], out["joint"][:, start:stop])
    # Heads holding the joint layer's columns give the same scores per task.
    report = transfer(joint, heads, mapping={f"head_{t}": "head_joint" for t in TASKS},
                      slices={f"head_{t}": task_slice(joint, t) for t in TASKS})
    assert report["copied"] == ["trunk"] and not report["kept"]
    assert sorted(report["sliced"]) == sorted(f"head_{t}" for t in TASKS)
    split = heads(x)
    for task in TASKS:
        np.testing.assert_allclose(split[task], out[task], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("form", ["joint", "heads"])
def test_transfer_copies_exactly_the_layers_it_says(form):
    keras.utils.set_random_seed(0)
    multi = zoo.build("allconv", tasks=TASKS, form=form)
    single, report = transfer_to_single_task(multi, "letters")
    assert report["copied"][0] == "trunk" and not report["kept"]
    for got, want in zip(single.get_layer("trunk").get_weights(), multi.get_layer("trunk").get_weights()):
        np.testing.assert_array_equal(got, want)
    head = single.get_layer("head_letters").get_weights()
    if form == "joint":
        assert report["sliced"] == ["head_letters"]
        kernel, bias = multi.get_layer("head_joint").get_weights()
        np.testing.assert_array_equal(head[0], kernel[..., 10:20])
        np.testing.assert_array_equal(head[1], bias[10:20])
    else:
        assert report["copied"] == ["trunk", "head_letters"]
        for got, want in zip(head, multi.get_layer("head_letters").get_weights()):
            np.testing.assert_array_equal(got, want)
    x = np.random.default_rng(1).random((4, 28, 28, 1), np.float32)
    np.testing.assert_allclose(single(x)["letters"], multi(x)["letters"], rtol=1e-5, atol=1e-6)


def test_transfer_checks_every_shape_before_writing():
    source = zoo.build("allconv", tasks={"mnist": 10}, filters=(8, 16))
    target = zoo.build("allconv", tasks={"mnist": 10}, filters=(8, 32))
    before = [w.copy() for w in target.get_weights()]
    with pytest.raises(ValueError, match="weight shapes"):
        transfer(source, target)
    for got, want in zip(target.get_weights(), before):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match=r"`mapping` names layers the target does not have: \['nope'\]"):
        transfer(source, target, mapping={"nope": "trunk"})


def test_lr_schedule_values_equal_the_formula():
    steps = 600
    schedule = StagedInverseTimeDecay(steps_per_epoch=steps)
    for epoch in (0, 1, 10, 24, 25, 26, 49):
        stage_rate, start = (1e-3, 0) if epoch < 25 else (1e-5, 25)
        expected = stage_rate / (1 + stage_rate / 25 * (epoch - start))
        for step in (epoch * steps, epoch * steps + steps - 1):
            assert float(schedule(step)) == pytest.approx(expected, rel=1e-6)
        assert schedule.rate_at_epoch(epoch) == pytest.approx(expected, rel=1e-12)
    restored = StagedInverseTimeDecay.from_config(schedule.get_config())
    assert float(restored(30 * steps)) == float(schedule(30 * steps))
    with pytest.raises(ValueError, match="steps_per_epoch=0"):
        StagedInverseTimeDecay(steps_per_epoch=0)


def test_a_short_real_run_learns():
    keras.utils.set_random_seed(0)
    x, y = two_task_batch(1024)
    joint_labels = np.where(y["mnist"] >= 0, y["mnist"], 10 + y["fashion_mnist"])
    small = {"filters": (16, 32), "dropout": 0.0}
    model = zoo.build("allconv", tasks={"mnist": 10, "fashion_mnist": 10}, **small)
    trainer = Trainer(model, tasks={"joint": 20}, learning_rate=1e-3)
    trainer.fit(x, {"joint": joint_labels}, epochs=4, batch_size=32, verbose=0)
    single, _ = transfer_to_single_task(model, "mnist", **small)
    rows = y["mnist"] >= 0
    accuracy = (np.argmax(single(x[rows])["mnist"], 1) == y["mnist"][rows]).mean()
    assert accuracy > 0.5, accuracy  # chance is 0.1


@pytest.mark.parametrize("kwargs, message", [
    ({"form": "tower"}, r"form='tower'"),
    ({"filters": (32,)}, r"filters=\(32,\)"),
    ({"depth": 4}, r"depth=4"),
    ({"input_shape": (8, 8, 1)}, r"input_shape=\(8, 8, 1\)"),
    ({"tasks": {"a": 10, "b": 5}}, r"equal numbers of classes"),
    ({"tasks": {"joint": 10, "b": 10}}, r"may not be called 'joint'"),
])
def test_bad_arguments_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        zoo.build("allconv", **{"tasks": TASKS, **kwargs})
