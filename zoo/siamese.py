"""Siamese pipes with auxiliary digit heads (paper 003: Albergoni, Feo and Bouvet, EE-559
mini-project 1, 2019).

Two 14x14 MNIST digits go in as one N x 2 x 14 x 14 tensor; a *pipe* maps each image to
10 digit logits, and a classifier on the two pipes' concatenated logits predicts whether
the first digit is at most the second. With weight sharing one pipe reads both images;
without it each image has its own pipe of the same shape. The pipes' logits are the
auxiliary outputs: `digit_a`, `digit_b`; the comparison is `compare`.

The paper's figures of the layers did not survive; the authors' code
(`qbouvet/DeepLearning-WeightSharing-AuxLoss`, `architectures.py`) gives them, and they
are the defaults here:

| pipe | layers | pipe params | classifier | model params (no WS / WS) |
|---|---|---|---|---|
| `shallow` | 196 -> 500 -> 10 | 103,510 | 20 -> 50 -> 2 | 208,172 / 104,662 |
| `deep` | 196 -> 300 -> 100 -> 70 -> 30 -> 20 -> 10 | 99,230 | 20 -> 30 -> 20 -> 10 -> 2 | 199,942 / 100,712 |
| `conv` | conv 3x3 16 (same), conv 3x3 32, max-pool 2, conv 3x3 64 (same), conv 3x3 64, max-pool 4, 64 -> 100 -> 10 | 67,734 | 20 -> 32 -> 2 | 136,206 / 68,472 |

On 14 x 14 images the conv pipe's maps are 14, 12, 6, 6, 4, then 1 x 1 x 64 after the
4 x 4 pool. Weight sharing shares the whole pipe, the conv pipe's dense part included.
`pipe_units` and `classifier_units` change the dense widths (our earlier guesses were
deep `(300, 100, 60, 40, 20)` with classifier `(50, 25)`).

ReLU everywhere but on logits; no dropout or batch normalisation (the paper used
neither). Weights start as PyTorch's default layer initialisation does (the paper's):
kernels and biases uniform in +-1/sqrt(fan_in).

The auxiliary loss is a loss weighting, not a layer: `aux_weighting(aux_loss_weight)`
gives the paper's weighted average (1 - w) L_compare + w (L_digit_a + L_digit_b) / 2.
"""

import keras

from mtl_tf.tasks import Task, as_tasks
from mtl_tf.weighting import get as get_weighting
from zoo.initializers import torch_uniform
from zoo.registry import register

TASKS = (Task("compare", 2), Task("digit_a", 10), Task("digit_b", 10))
PIPES = ("shallow", "deep", "conv")
# The authors' dense widths (architectures.py): the pipe's hidden layers, the classifier's.
PIPE_UNITS = {"shallow": (500,), "deep": (300, 100, 70, 30, 20), "conv": (100,)}
CLASSIFIER_UNITS = {"shallow": (50,), "deep": (30, 20, 10), "conv": (32,)}


def _dense(units, fan_in, activation="relu", name=None):
    return keras.layers.Dense(units, activation=activation, name=name,
                              kernel_initializer=torch_uniform(fan_in), bias_initializer=torch_uniform(fan_in))


def _conv(filters, channels_in, kernel=3, padding="valid"):
    fan_in = kernel * kernel * channels_in
    return keras.layers.Conv2D(filters, kernel, activation="relu", padding=padding,
                               kernel_initializer=torch_uniform(fan_in), bias_initializer=torch_uniform(fan_in))


def _mlp(widths, fan_in, outputs):
    """Dense ReLU layers of `widths`, then a linear layer of `outputs`."""
    layers = []
    for width in widths:
        layers.append(_dense(width, fan_in))
        fan_in = width
    layers.append(_dense(outputs, fan_in, activation=None, name="logits"))
    return layers


def _pipe(kind, image_shape, name, units):
    layers = [keras.Input(image_shape)]
    if kind == "conv":
        layers += [keras.layers.Reshape((*image_shape, 1)),
                   _conv(16, 1, padding="same"), _conv(32, 16), keras.layers.MaxPooling2D(2),
                   _conv(64, 32, padding="same"), _conv(64, 64), keras.layers.MaxPooling2D(4),
                   keras.layers.Flatten()]
        side = ((image_shape[0] - 2) // 2 - 2) // 4, ((image_shape[1] - 2) // 2 - 2) // 4
        layers += _mlp(units, side[0] * side[1] * 64, 10)
    else:
        layers.append(keras.layers.Flatten())
        layers += _mlp(units, image_shape[0] * image_shape[1], 10)
    return keras.Sequential(layers, name=name)


def _check_tasks(tasks):
    if tasks is None:
        return TASKS
    tasks = as_tasks(tasks)
    got = {t.name: t.num_outputs for t in tasks}
    expected = {t.name: t.num_outputs for t in TASKS}
    if got != expected:
        raise ValueError(f"`tasks` of a Siamese model must be {expected} (the comparison and "
                         f"each pipe's digit). Received: tasks={got}")
    return TASKS


@register("siamese")
def siamese(tasks=None, input_shape=(2, 14, 14), pipe="conv", weight_sharing=True,
            pipe_units=None, classifier_units=None, rescale=1.0 / 255.0, name=None):
    """Two pipes (or one shared pipe) and a comparison classifier, paper 003.

    Args:
        tasks: None, or the tasks `{"compare": 2, "digit_a": 10, "digit_b": 10}` (the
            only ones this model has). Defaults to `None`.
        input_shape: tuple of int. `(2, H, W)`: two grey images per example. Defaults
            to `(2, 14, 14)`.
        pipe: str. `"shallow"`, `"deep"` or `"conv"`. Defaults to `"conv"`.
        weight_sharing: bool. One pipe for both images (`True`) or one pipe per image.
            Defaults to `True`.
        pipe_units: tuple of int or None. The pipe's dense hidden layers; `None` takes
            the authors' (`PIPE_UNITS`): `(500,)`, `(300, 100, 70, 30, 20)`, `(100,)`.
        classifier_units: tuple of int or None. Hidden layers of the classifier; `None`
            takes the authors': `(50,)` shallow, `(30, 20, 10)` deep, `(32,)` conv.
        rescale: float. Multiplies the inputs first; the default maps 0..255 pixels
            (what `load_numpy("mnist_pairs")` returns) to [0, 1]; the authors fed the raw
            0..255 values (`rescale=1.0`). Defaults to `1/255`.
        name: str or None. Defaults to `"siamese_<pipe>_ws"` or `"siamese_<pipe>"`.

    Example:
    ```python
    import numpy as np
    import zoo
    model = zoo.build("siamese", pipe="shallow", weight_sharing=False)
    out = model(np.zeros((3, 2, 14, 14), "float32"))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "compare": (3, 2), "digit_a": (3, 10), "digit_b": (3, 10)}
    ```
    """
    # === Validate ===
    _check_tasks(tasks)
    shape = tuple(input_shape) if isinstance(input_shape, (list, tuple)) else None
    if not shape or len(shape) != 3 or shape[0] != 2 or not all(
            isinstance(d, int) and d > 0 for d in shape):
        raise ValueError(f"`input_shape` must be (2, height, width): two images per example, "
                         f"without the batch axis. Received: input_shape={input_shape!r}")
    if pipe not in PIPES:
        raise ValueError(f"`pipe` must be one of {list(PIPES)}. Received: pipe={pipe!r}")
    if pipe == "conv" and min(shape[1:]) < 14:
        raise ValueError(f"The conv pipe needs images of at least 14 x 14. Received: "
                         f"input_shape={input_shape!r}")
    if not isinstance(weight_sharing, bool):
        raise ValueError(f"`weight_sharing` must be True or False. Received: "
                         f"weight_sharing={weight_sharing!r}")
    for argument, value in (("pipe_units", pipe_units), ("classifier_units", classifier_units)):
        if value is not None and (not isinstance(value, (list, tuple)) or not all(
                isinstance(u, int) and u > 0 for u in value) or (argument == "pipe_units" and not value)):
            raise ValueError(f"`{argument}` must be a tuple of positive integers. Received: "
                             f"{argument}={value!r}")
    pipe_units = tuple(PIPE_UNITS[pipe] if pipe_units is None else pipe_units)
    classifier_units = tuple(CLASSIFIER_UNITS[pipe] if classifier_units is None else classifier_units)
    name = name or f"siamese_{pipe}{'_ws' if weight_sharing else ''}"

    # === Pipes ===
    image_shape = shape[1:]
    if weight_sharing:
        pipe_a = pipe_b = _pipe(pipe, image_shape, "pipe", pipe_units)
    else:
        pipe_a = _pipe(pipe, image_shape, "pipe_a", pipe_units)
        pipe_b = _pipe(pipe, image_shape, "pipe_b", pipe_units)
    inputs = keras.Input(shape, name="inputs")
    scaled = keras.layers.Rescaling(rescale, name="rescale")(inputs)
    digit_a = pipe_a(scaled[:, 0])
    digit_b = pipe_b(scaled[:, 1])

    # === Comparison classifier ===
    classifier = keras.Sequential([keras.Input((20,)), *_mlp(tuple(classifier_units), 20, 2)],
                                  name="classifier")
    joined = keras.layers.Concatenate(name="concatenate")([digit_a, digit_b])
    outputs = {"compare": classifier(joined), "digit_a": digit_a, "digit_b": digit_b}
    return keras.Model(inputs, outputs, name=name)


@register("siamese_shallow")
def siamese_shallow(**kwargs):
    """`siamese` with the shallow fully connected pipe (one hidden layer of 500)."""
    return siamese(**{"pipe": "shallow", **kwargs})


@register("siamese_deep")
def siamese_deep(**kwargs):
    """`siamese` with the deep fully connected pipe (five hidden layers: 300, 100, 70, 30, 20)."""
    return siamese(**{"pipe": "deep", **kwargs})


@register("siamese_conv")
def siamese_conv(**kwargs):
    """`siamese` with the convolutional pipe (four 3x3 convolutions, max-pooling 2 then 4)."""
    return siamese(**{"pipe": "conv", **kwargs})


def aux_weighting(aux_loss_weight=0.5):
    """Paper 003's auxiliary loss as a fixed weighting of (compare, digit_a, digit_b):
    (1 - w) L_compare + w (L_digit_a + L_digit_b) / 2. `w = 0` trains on the comparison
    alone; the paper turns the auxiliary loss on with `w = 0.5`.

    Example:
    ```python
    from zoo.siamese import aux_weighting
    assert aux_weighting(0.5).get_config() == {"weights": [0.5, 0.25, 0.25]}
    ```
    """
    if isinstance(aux_loss_weight, bool) or not isinstance(aux_loss_weight, (int, float)) or not (
            0.0 <= aux_loss_weight <= 1.0):
        raise ValueError(f"`aux_loss_weight` must be a number in [0, 1]. Received: "
                         f"aux_loss_weight={aux_loss_weight!r}")
    w = float(aux_loss_weight)
    return get_weighting("fixed", weights=[1.0 - w, w / 2.0, w / 2.0])
