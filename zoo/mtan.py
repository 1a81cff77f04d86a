"""MTAN, the Multi-Task Attention Network (Liu, Johns and Davison, "End-to-End Multi-Task
Learning with Attention", CVPR 2019).

A shared backbone of J stages; each task has a soft-attention module at every stage that
masks the stage's shared features. At stage j the backbone computes u_j (its first
layer's output) and p_j (its last, before pooling); task t's mask is
a_t^j = sigmoid(h_t^j([u_j, f_t^{j-1}(a^_t^{j-1})])) and its attended features
a^_t^j = a_t^j * p_j (the paper's Eq. 1), where h is two 1x1 convolutions with batch norm
(ReLU, then sigmoid) and f a 3x3 convolution with batch norm and ReLU that brings the
previous stage's attended features to stage j's width and resolution (then pooled as
the backbone is). At the first stage the mask reads u_1 alone. Each task's head reads its
last attended features. Facts from the paper and the authors' code (lorenmt/mtan): the
attention's layers and their order, masks from the stage's first features applied to
its last. The backbone here is small conv blocks (two 3x3 convolutions and a 2x2
max-pool per stage) for images, or dense layers for flat inputs (h and f then dense,
without batch norm); the paper's is SegNet or a wide ResNet.

The graph cut is the backbone's u_j and p_j at every stage: every task's attention reads
them, and nothing else the tasks share.
"""

import keras

from mtl_tf.layers import BatchNormalization
from mtl_tf.tasks import as_tasks
from zoo.experts import check_input, check_widths
from zoo.registry import register


def _conv(filters, size, activation, momentum, name):
    return keras.Sequential([keras.layers.Conv2D(filters, size, padding="same"),
                             BatchNormalization(momentum=momentum),
                             keras.layers.Activation(activation)], name=name)


@register("mtan")
def mtan(tasks, input_shape, backbone=None, filters=(32, 64), units=(128, 64), head_units=(64,), dropout=0.0,
         batch_norm_momentum=0.99, name="mtan"):
    """A shared backbone and one attention module per task at each stage. Outputs are a
    dict keyed by task name (logits); task t's stage-j attention is the layer
    `attention_<t>_<j>`, the backbone's stage layers `stage_<j>_first`, `stage_<j>_last`.

    Args:
        tasks: dict of task name -> number of outputs, or a list of `mtl_tf.tasks.Task`.
        input_shape: tuple of int. An image or a flat feature vector.
        backbone: `"conv"` (images) or `"dense"`. Defaults to `"conv"` for images.
        filters: tuple of int. Each conv stage's width. Defaults to `(32, 64)`.
        units: tuple of int. Each dense stage's width. Defaults to `(128, 64)`.
        head_units: tuple of int. Each head's hidden layers. Defaults to `(64,)`.
        dropout: float. Before each head's logits. Defaults to `0.0`.
        batch_norm_momentum: float. The conv layers' batch norms. Defaults to `0.99`
            (Keras's; short runs need less for the moving statistics to follow).
        name: str. Defaults to `"mtan"`.
    """
    tasks = as_tasks(tasks)
    input_shape, backbone = check_input(input_shape, backbone, "backbone")
    conv = backbone == "conv"
    widths = check_widths("filters", filters) if conv else check_widths("units", units)
    head_units = check_widths("head_units", head_units, allow_empty=True)
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"`dropout` must lie in [0, 1). Received: dropout={dropout!r}")
    momentum = batch_norm_momentum
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum < 1:
        raise ValueError(f"`batch_norm_momentum` must lie in [0, 1). Received: batch_norm_momentum={momentum!r}")

    inputs = keras.Input(input_shape, name="inputs")
    x = inputs
    if conv and len(input_shape) == 2:
        x = keras.layers.Reshape((*input_shape, 1))(x)
    if not conv and len(input_shape) > 1:
        x = keras.layers.Flatten(name="flat_inputs")(x)
    pool = keras.layers.MaxPooling2D if conv else None
    attended = {t.name: None for t in tasks}
    for j, width in enumerate(widths):
        if conv:
            first = _conv(width, 3, "relu", momentum, f"stage_{j}_first")(x)
            last = _conv(width, 3, "relu", momentum, f"stage_{j}_last")(first)
        else:
            first = keras.layers.Dense(width, activation="relu", name=f"stage_{j}_first")(x)
            last = keras.layers.Dense(width, activation="relu", name=f"stage_{j}_last")(first)
        for t in tasks:
            source = first
            if attended[t.name] is not None:
                if conv:
                    previous = _conv(width, 3, "relu", momentum, f"adapt_{t.name}_{j}")(attended[t.name])
                    previous = pool(name=f"adapt_{t.name}_{j}_pool")(previous)
                else:
                    previous = keras.layers.Dense(width, activation="relu", name=f"adapt_{t.name}_{j}")(attended[t.name])
                source = keras.layers.Concatenate(name=f"attention_{t.name}_{j}_input")([first, previous])
            if conv:
                mask = keras.Sequential([keras.layers.Conv2D(width, 1),
                                         BatchNormalization(momentum=momentum),
                                         keras.layers.Activation("relu"), keras.layers.Conv2D(width, 1),
                                         BatchNormalization(momentum=momentum),
                                         keras.layers.Activation("sigmoid")],
                                        name=f"attention_{t.name}_{j}")(source)
            else:
                mask = keras.Sequential([keras.layers.Dense(width, activation="relu"),
                                         keras.layers.Dense(width, activation="sigmoid")],
                                        name=f"attention_{t.name}_{j}")(source)
            attended[t.name] = keras.layers.Multiply(name=f"attended_{t.name}_{j}")([mask, last])
        if j < len(widths) - 1:
            x = pool(name=f"stage_{j}_pool")(last) if conv else last
    outputs = {}
    for t in tasks:
        h = attended[t.name]
        if conv:
            h = pool(name=f"head_{t.name}_pool")(h)
            h = keras.layers.Flatten(name=f"head_{t.name}_flatten")(h)
        layers = [keras.layers.Dense(u, activation="relu") for u in head_units]
        if dropout:
            layers.append(keras.layers.Dropout(dropout))
        layers.append(keras.layers.Dense(t.num_outputs, name="logits"))
        outputs[t.name] = keras.Sequential(layers, name=f"tower_{t.name}")(h)
    return keras.Model(inputs, outputs, name=name)
