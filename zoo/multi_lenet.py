"""MultiLeNet: the network of Sener and Koltun's MultiMNIST experiment (NeurIPS 2018,
"Multi-Task Learning as Multi-Objective Optimization").

The layers are those of the authors' code (isl-org/MultiObjectiveOptimization,
`multi_task/models/multi_lenet.py`): a shared LeNet trunk

    conv 5x5 10 -> max-pool 2 -> ReLU -> conv 5x5 20 -> Dropout2d 0.5 -> max-pool 2 -> ReLU
    -> flatten (320 on 28 x 28 images) -> dense 50 -> ReLU

and per task a head `dense 50 -> ReLU -> dropout 0.5 -> dense 10` (logits; the authors
return log-softmax and use the NLL loss, the same loss as cross-entropy on logits).
Pareto MTL (Lin et al., NeurIPS 2019, Xi-L/ParetoMTL) runs the same network on 36 x 36
images with a 9 x 9 first kernel, which again gives 5 x 5 x 20 maps: `kernels=(9, 5)`.

Where it differs from the authors' code, and why:
- Their head's dropout multiplies by a 0/1 mask without the 1 / (1 - p) rescaling (and
  the same mask is reused for a task within a step); Keras's `Dropout` rescales, which is
  the same network up to a factor 2 on the last layer's input that training absorbs.
- Weights start as PyTorch's defaults did (`zoo.initializers.torch_uniform`).

The parts are named as `hard_sharing`'s (`trunk`, `head_<task>`), so the trainer's
per-task gradients read the 50-unit representation, where MGDA-UB takes them.
"""

import keras

from mtl_tf.tasks import as_tasks
from zoo.hard_sharing import _check_shape
from zoo.initializers import torch_uniform
from zoo.registry import register


def _conv(filters, kernel, channels_in):
    fan_in = kernel * kernel * channels_in
    return keras.layers.Conv2D(filters, kernel, kernel_initializer=torch_uniform(fan_in),
                               bias_initializer=torch_uniform(fan_in))


def _dense(units, fan_in, activation=None, name=None):
    return keras.layers.Dense(units, activation=activation, name=name, kernel_initializer=torch_uniform(fan_in),
                              bias_initializer=torch_uniform(fan_in))


@register("multi_lenet")
def multi_lenet(tasks, input_shape=(28, 28, 1), kernels=(5, 5), filters=(10, 20), units=50, head_units=50,
                dropout=0.5, name="multi_lenet"):
    """Sener and Koltun's MultiLeNet: a shared LeNet trunk and a two-layer head per task.

    Args:
        tasks: dict of task name -> number of classes, or a list of `mtl_tf.tasks.Task`.
        input_shape: tuple of int. `(H, W)` or `(H, W, C)`. Defaults to `(28, 28, 1)`.
        kernels: pair of int. The two convolutions' kernel sizes. Defaults to `(5, 5)`
            (Sener and Koltun); Pareto MTL's 36 x 36 images use `(9, 5)`.
        filters: pair of int. The two convolutions' filters. Defaults to `(10, 20)`.
        units: int. The shared representation's width. Defaults to `50`.
        head_units: int. Each head's hidden layer. Defaults to `50`.
        dropout: float. The rate of the trunk's channel dropout and of each head's dropout.
            Defaults to `0.5`.
        name: str. The model's name. Defaults to `"multi_lenet"`.

    Example:
    ```python
    import numpy as np
    import zoo
    model = zoo.build("multi_lenet", tasks={"left": 10, "right": 10})
    out = model(np.zeros((2, 28, 28, 1), "float32"))
    assert out["left"].shape == (2, 10) and model.count_params() == 27_450
    ```
    """
    tasks = as_tasks(tasks)
    input_shape = _check_shape(input_shape)
    if len(input_shape) not in (2, 3):
        raise ValueError(f"`input_shape` must be (H, W) or (H, W, C). Received: input_shape={input_shape!r}")
    for arg, value in (("kernels", kernels), ("filters", filters)):
        if (not isinstance(value, (list, tuple)) or len(value) != 2
                or not all(isinstance(v, int) and v > 0 for v in value)):
            raise ValueError(f"`{arg}` must be two positive integers. Received: {arg}={value!r}")
    for arg, value in (("units", units), ("head_units", head_units)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"`{arg}` must be a positive integer. Received: {arg}={value!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"`dropout` must lie in [0, 1). Received: dropout={dropout!r}")
    channels = input_shape[2] if len(input_shape) == 3 else 1
    sides = list(input_shape[:2])
    for k in kernels:
        sides = [(s - k + 1) // 2 for s in sides]
    if min(sides) < 1:
        raise ValueError(f"`input_shape` {input_shape} is too small for kernels {tuple(kernels)}.")

    layers = [keras.Input(input_shape)]
    if len(input_shape) == 2:
        layers.append(keras.layers.Reshape((*input_shape, 1)))
    layers += [_conv(filters[0], kernels[0], channels), keras.layers.MaxPooling2D(2), keras.layers.ReLU(),
               _conv(filters[1], kernels[1], filters[0])]
    if dropout:
        layers.append(keras.layers.SpatialDropout2D(dropout))
    layers += [keras.layers.MaxPooling2D(2), keras.layers.ReLU(), keras.layers.Flatten()]
    trunk = keras.Sequential(layers, name="trunk")
    flat = trunk.output_shape[-1]
    trunk.add(_dense(units, flat, activation="relu"))

    inputs = keras.Input(input_shape, name="inputs")
    representation = trunk(inputs)
    outputs = {}
    for task in tasks:
        head = [keras.Input((units,)), _dense(head_units, units, activation="relu")]
        if dropout:
            head.append(keras.layers.Dropout(dropout))
        head.append(_dense(task.num_outputs, head_units, name="logits"))
        outputs[task.name] = keras.Sequential(head, name=f"head_{task.name}")(representation)
    return keras.Model(inputs, outputs, name=name)
