"""All-convolution multi-output nets (paper 000: multi-task learning on MNIST-like data).

The all-convolution net of Springenberg et al. (2014, All-CNN-C): no pooling layers,
strided 3x3 convolutions downsample instead, then 1x1 convolutions and global average
pooling give the class scores. Paper 000's figure with its exact layers did not survive;
we keep All-CNN-C's order of layers and make it fit 28x28 grey images on 2 CPU cores.
The default (`depth=2`, `filters=(32, 64)`):

    3x3 conv 32, 3x3 conv 32 stride 2           28 -> 14
    3x3 conv 64, 3x3 conv 64 stride 2           14 -> 7
    3x3 conv 64 (valid) 7 -> 5, 1x1 conv 64     the shared trunk ends here
    1x1 conv 10 (per task) or 10 T (joint), global average pooling -> logits

`depth=3` puts a third 3x3 convolution in each block, as All-CNN-C has (at 96/192
channels). Each convolution but the last is followed by batch normalisation and ReLU.
Our choices, measured on a 2-core CPU (`python -m benchmarks.allconv_speed`): All-CNN-C's
recipe at (32, 64) trains at 624 images/s, the default at 1,271 (Keras's batch norm; with
the fused one, on another machine, 976 and 1,533); without batch normalisation (All-CNN had none,
and dropout 0.5 instead) the net needs several times the epochs to pass 98% on MNIST,
which a 30-minute profile cannot afford. `batch_norm=False, dropout=0.5, depth=3` gives
the original recipe. The default trunk has 107,360 parameters (1,280 of them batch
normalisation), each task's output layer 650 (the joint layer of T tasks, 650 T).

Three forms, one trunk:
- `form="joint"` (the paper's): one output layer of 10 T scores under one softmax,
  trained as a single task `joint` on the pooled data's zero-padded one-hot labels (as
  integers: task t's class c is `10 t + c`); every task's own 10 scores are also outputs,
  sliced from the joint ones, so a SavedModel answers per task.
- `form="heads"` (the modern one): one 10-way head per task, each trained only on its
  own examples (masked losses).
- one task (`tasks` of one entry) gives the single-task net.

`transfer_to_single_task(model, task)` hands a trained multi-task net's weights to a
single-task net: the trunk, and the task's head or its slice of the joint layer.
"""

import keras

from mtl_tf.layers import BatchNormalization
from mtl_tf.tasks import as_tasks
from mtl_tf.transfer import transfer
from zoo.registry import register

FORMS = ("joint", "heads")
JOINT = "joint"


def _conv(filters, kernel, strides=1, padding="same", activation="relu", name=None,
          initializer="glorot_uniform"):
    return keras.layers.Conv2D(filters, kernel, strides=strides, padding=padding,
                               activation=activation, name=name, kernel_initializer=initializer)


def _trunk(input_shape, filters, dropout, batch_norm, initializer, depth):
    c1, c2 = filters

    def block(width, kernel, strides=1, padding="same"):
        if not batch_norm:
            return [_conv(width, kernel, strides, padding, initializer=initializer)]
        return [_conv(width, kernel, strides, padding, activation=None, initializer=initializer),
                BatchNormalization(momentum=0.9), keras.layers.ReLU()]

    layers = [keras.Input(input_shape)]
    if len(input_shape) == 2:
        layers.append(keras.layers.Reshape((*input_shape, 1)))
    layers += block(c1, 3) + (block(c1, 3) if depth == 3 else []) + block(c1, 3, strides=2)
    if dropout:
        layers.append(keras.layers.Dropout(dropout))
    layers += block(c2, 3) + (block(c2, 3) if depth == 3 else []) + block(c2, 3, strides=2)
    if dropout:
        layers.append(keras.layers.Dropout(dropout))
    layers += block(c2, 3, padding="valid") + block(c2, 1)
    return keras.Sequential(layers, name="trunk")


def _head(name, trunk_shape, outputs):
    return keras.Sequential([
        keras.Input(trunk_shape),
        _conv(outputs, 1, activation=None, name="scores"),
        keras.layers.GlobalAveragePooling2D(name="average"),
    ], name=f"head_{name}")


@register("allconv")
def allconv(tasks, input_shape=(28, 28, 1), form="joint", filters=(32, 64), depth=2,
            batch_norm=True, dropout=0.0, initializer="glorot_uniform", name=None):
    """The all-convolution net for one task, or for T tasks jointly or with a head each.

    Args:
        tasks: dict of task name -> classes, or a list of `mtl_tf.tasks.Task`. With the
            joint form every task must have the same number of classes.
        input_shape: tuple of int. One image's shape. Defaults to `(28, 28, 1)`.
        form: str. `"joint"` (one output layer of sum-of-classes scores, paper 000) or
            `"heads"` (one head per task). Irrelevant for one task. Defaults to `"joint"`.
        filters: tuple of 2 int. Widths of the first and second convolution blocks.
            Defaults to `(32, 64)`.
        depth: int. 3x3 convolutions per block, 2 or 3 (All-CNN-C's). Defaults to `2`.
        batch_norm: bool. Batch normalisation after each convolution. Defaults to `True`.
        dropout: float. Dropout after each strided convolution. Defaults to `0.0`.
        initializer: str. The convolutions' kernel initializer. Defaults to
            `"glorot_uniform"` (Keras's).
        name: str or None. Defaults to `"allconv_<form>"` (or `"allconv"` for one task).

    Example:
    ```python
    import numpy as np
    import zoo
    model = zoo.build("allconv", tasks={"mnist": 10, "letters": 10})
    out = model(np.zeros((2, 28, 28, 1), "float32"))
    assert out["joint"].shape == (2, 20) and out["letters"].shape == (2, 10)
    ```
    """
    # === Validate ===
    tasks = as_tasks(tasks)
    if form not in FORMS:
        raise ValueError(f"`form` must be one of {list(FORMS)}. Received: form={form!r}")
    if len(tasks) == 1:
        form = "heads"
    if form == "joint":
        if any(t.name == JOINT for t in tasks):
            raise ValueError(f"A task may not be called {JOINT!r} in the joint form: the joint "
                             f"output has that name. Received tasks: {[t.name for t in tasks]}")
        if len({t.num_outputs for t in tasks}) != 1:
            raise ValueError(f"The joint form needs tasks with equal numbers of classes. "
                             f"Received: tasks={ {t.name: t.num_outputs for t in tasks} }")
    shape = tuple(input_shape) if isinstance(input_shape, (list, tuple)) else None
    if not shape or len(shape) not in (2, 3) or not all(isinstance(d, int) and d >= 12 for d in shape[:2]):
        raise ValueError(f"`input_shape` must be (height, width[, channels]) with sides of at "
                         f"least 12. Received: input_shape={input_shape!r}")
    if (not isinstance(filters, (list, tuple)) or len(filters) != 2
            or not all(isinstance(f, int) and f > 0 for f in filters)):
        raise ValueError(f"`filters` must be two positive integers. Received: filters={filters!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"`dropout` must lie in [0, 1). Received: dropout={dropout!r}")
    if depth not in (2, 3):
        raise ValueError(f"`depth` must be 2 or 3. Received: depth={depth!r}")
    name = name or ("allconv" if len(tasks) == 1 else f"allconv_{form}")

    # === Shared trunk ===
    trunk = _trunk(shape, tuple(filters), dropout, batch_norm, initializer, depth)
    inputs = keras.Input(shape, name="inputs")
    features = trunk(inputs)
    trunk_shape = tuple(features.shape[1:])

    # === Task outputs ===
    if form == "heads":
        outputs = {t.name: _head(t.name, trunk_shape, t.num_outputs)(features) for t in tasks}
    else:
        width = tasks[0].num_outputs
        joint = _head(JOINT, trunk_shape, width * len(tasks))(features)
        outputs = {JOINT: joint}
        for i, task in enumerate(tasks):
            outputs[task.name] = keras.layers.Identity(name=task.name)(joint[:, width * i: width * (i + 1)])
    return keras.Model(inputs, outputs, name=name)


def task_slice(model, task):
    """The columns `(start, stop)` of a joint-form model's `joint` output that are
    `task`'s scores; the same columns in which `mtl_tf.data.pool` one-hot encodes it."""
    names = [n for n in model.output if n != JOINT]
    if JOINT not in model.output or task not in names:
        raise ValueError(f"`task` must be one of the joint model's tasks {names}. "
                         f"Received: task={task!r}")
    width = int(model.output[task].shape[-1])
    start = names.index(task) * width
    return start, start + width


def transfer_to_single_task(model, task, **kwargs):
    """A single-task all-convolution net for `task` initialised from a trained multi-task
    one: the trunk copied, and the task's head copied (heads form) or its slice of the
    joint output layer (joint form). `kwargs` go to the builder (`filters`, `dropout`
    must match the source's). Returns `(single_task_model, transfer_report)`."""
    width = int(model.output[task].shape[-1]) if task in model.output else None
    if width is None or task == JOINT:
        names = [n for n in model.output if n != JOINT]
        raise ValueError(f"`task` must be one of the model's tasks {names}. Received: task={task!r}")
    single = allconv({task: width}, input_shape=tuple(model.input.shape[1:]), **kwargs)
    if JOINT in model.output:
        report = transfer(model, single, mapping={f"head_{task}": f"head_{JOINT}"},
                          slices={f"head_{task}": task_slice(model, task)})
    else:
        report = transfer(model, single)
    return single, report


@register("allconv_heads")
def allconv_heads(tasks, **kwargs):
    """`allconv` with one head per task (masked losses) instead of the joint output."""
    return allconv(tasks, **{"form": "heads", **kwargs})
