"""Coarse-to-fine concatenation nets (Powers, "Deep Learning Final Project Report", 2019;
paper 004): two classification tasks on one image, a fine label set that refines a coarse
one (CIFAR-100's 100 classes in 20 superclasses), and six ways to share between them.

| architecture | convolutions | between the heads |
|---|---|---|
| `independent` | one trunk per task | nothing |
| `shared` | one trunk, both heads | nothing |
| `reuse_coarse` | one trunk per task | coarse scores concatenated into the fine head |
| `reuse_fine` | one trunk per task | fine scores concatenated into the coarse head |
| `shared_reuse_coarse` | one trunk, both heads | coarse scores into the fine head |
| `shared_reuse_fine` | one trunk, both heads | fine scores into the coarse head |

Facts from the author's code (`abpwrs/ece-5995-fa19`, `train.py`'s `make_model`), where the
report is silent: a trunk is three 3x3 convolutions of 64 then two of 128 (same padding,
ReLU), each group followed by a 2x2 max pool and batch norm, then flatten; a head is blocks
of Dense (ReLU), dropout 0.25 and batch norm of widths 1024, 512, 256, 128, then the output
layer; the reused scores are the other head's pre-softmax outputs, concatenated onto the
reusing head's 512-unit block, and gradients flow through them into the other head (the
report's section 4 explains the coarse head's loss by that flow: `stop_gradient=True`
cuts it, to test the explanation). The report says the six nets have the same number of
parameters; the code only gives them the same widths (a shared trunk has one set of
convolutions, the reuse layers read 20 or 100 more inputs), which keeps them within 2% of
each other: `model.count_params()` says by how much.

Outputs are a dict of logits keyed by the two task names. The `shared` net is made of a
`trunk` and `head_<task>` parts, so every per-task gradient strategy of the trainer applies
to it; the others are trained with one backward pass per task where a strategy asks.
"""

import keras

from mtl_tf.layers import BatchNormalization
from mtl_tf.names import unknown_name
from mtl_tf.tasks import as_tasks
from zoo.hard_sharing import _check_shape
from zoo.registry import register

ARCHITECTURES = ("independent", "shared", "reuse_coarse", "reuse_fine", "shared_reuse_coarse",
                 "shared_reuse_fine")
CONV_FILTERS = ((64, 64, 64), (128, 128))
HEAD_UNITS = (1024, 512, 256, 128)


@keras.saving.register_keras_serializable(package="mtl_tf")
class StopGradient(keras.layers.Layer):
    """Passes its input forward and no gradient back."""

    def call(self, x):
        return keras.ops.stop_gradient(x)


def _check_widths(name, value, nested=False):
    groups = list(value) if nested and isinstance(value, (list, tuple)) else [value]
    well_formed = groups and all(isinstance(g, (list, tuple)) and g for g in groups)
    if not well_formed or not all(isinstance(w, int) and not isinstance(w, bool) and w > 0
                                  for g in groups for w in g):
        shape = "groups (tuples) of positive integers" if nested else "positive integers"
        raise ValueError(f"`{name}` must be {shape}. Received: {name}={value!r}")
    return tuple(tuple(g) for g in value) if nested else tuple(value)


def _trunk(input_shape, conv_filters, momentum, name):
    layers = [keras.Input(input_shape)]
    if len(input_shape) == 2:
        layers.append(keras.layers.Reshape((*input_shape, 1)))
    for group in conv_filters:
        layers += [keras.layers.Conv2D(f, 3, padding="same", activation="relu") for f in group]
        layers += [keras.layers.MaxPooling2D(2), BatchNormalization(momentum=momentum)]
    layers.append(keras.layers.Flatten())
    return keras.Sequential(layers, name=name)


def _blocks(width, units, dropout, momentum, classes, name):
    """Dense (ReLU), dropout, batch norm per width in `units`; then `classes` logits if
    given."""
    layers = [keras.Input((width,))]
    for u in units:
        layers += [keras.layers.Dense(u, activation="relu"), keras.layers.Dropout(dropout),
                   BatchNormalization(momentum=momentum)]
    if classes:
        layers.append(keras.layers.Dense(classes, name="logits"))
    return keras.Sequential(layers, name=name)


@register("coarse_fine")
def coarse_fine(tasks=None, input_shape=(32, 32, 3), architecture="independent", fine="fine",
                coarse="coarse", conv_filters=CONV_FILTERS, head_units=HEAD_UNITS, reuse_after=2,
                dropout=0.25, batch_norm_momentum=0.99, stop_gradient=False, name=None):
    """One of paper 004's six coarse/fine nets.

    Args:
        tasks: dict of task name -> number of classes (or a list of `Task`s) with the two
            tasks named `fine` and `coarse`. Defaults to CIFAR-100's
            `{"fine": 100, "coarse": 20}`.
        input_shape: tuple of int. One image's shape (H, W) or (H, W, C). Defaults to
            `(32, 32, 3)`.
        architecture: str. One of `ARCHITECTURES`. Defaults to `"independent"`.
        fine, coarse: str. Which task is the fine one and which the coarse one. Default to
            `"fine"` and `"coarse"`.
        conv_filters: groups of int. Each group's 3x3 convolutions, then a 2x2 max pool and
            batch norm. Defaults to `((64, 64, 64), (128, 128))`, the paper's.
        head_units: tuple of int. Each head's Dense, dropout, batch-norm blocks. Defaults to
            `(1024, 512, 256, 128)`, the paper's.
        reuse_after: int. How many of `head_units`' blocks come before the concatenation.
            Defaults to `2` (after the 512-unit block, as the author's code).
        dropout: float in [0, 1). Defaults to `0.25`.
        batch_norm_momentum: float in (0, 1). The batch norms' moving-average momentum.
            Defaults to `0.99` (Keras's, as the author's code); lower it for runs of few steps.
        stop_gradient: bool. In the reuse architectures, pass the other task's scores
            forward only (no gradient of the reusing task flows into the other head).
            Defaults to `False`, as the paper.
        name: str. Defaults to `"coarse_fine_<architecture>"`.

    Example:
    ```python
    import numpy as np
    import zoo
    model = zoo.build("coarse_fine_reuse_coarse", tasks={"fine": 10, "coarse": 4},
                      input_shape=(28, 28, 1), conv_filters=((8,), (16,)),
                      head_units=(32, 16, 16))
    out = model(np.zeros((2, 28, 28, 1), "float32"))
    assert out["fine"].shape == (2, 10) and out["coarse"].shape == (2, 4)
    ```
    """
    # === Validate ===
    tasks = as_tasks({"fine": 100, "coarse": 20} if tasks is None else tasks)
    names = [t.name for t in tasks]
    if len(tasks) != 2 or sorted(names) != sorted([fine, coarse]) or fine == coarse:
        raise ValueError(f"`tasks` must be two tasks, named by `fine`={fine!r} and `coarse`="
                         f"{coarse!r}. Received: tasks={names!r}")
    if architecture not in ARCHITECTURES:
        raise unknown_name("architecture", "architecture", architecture, ARCHITECTURES)
    input_shape = _check_shape(input_shape)
    if len(input_shape) not in (2, 3):
        raise ValueError(f"`input_shape` must be (height, width) or (height, width, channels). "
                         f"Received: input_shape={input_shape!r}")
    conv_filters = _check_widths("conv_filters", conv_filters, nested=True)
    head_units = _check_widths("head_units", head_units)
    if not isinstance(reuse_after, int) or not 1 <= reuse_after <= len(head_units):
        raise ValueError(f"`reuse_after` must be an integer in [1, {len(head_units)}] (a block "
                         f"of `head_units`). Received: reuse_after={reuse_after!r}")
    if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"`dropout` must lie in [0, 1). Received: dropout={dropout!r}")
    if not isinstance(batch_norm_momentum, (int, float)) or not 0.0 < batch_norm_momentum < 1.0:
        raise ValueError(f"`batch_norm_momentum` must lie in (0, 1). Received: "
                         f"batch_norm_momentum={batch_norm_momentum!r}")
    classes = {t.name: t.num_outputs for t in tasks}
    shared = architecture.startswith("shared")
    reused = {"reuse_coarse": coarse, "reuse_fine": fine}.get(architecture.replace("shared_", ""))
    reusing = None if reused is None else (fine if reused == coarse else coarse)

    def blocks(width, units, num_classes, part):
        return _blocks(width, units, dropout, batch_norm_momentum, num_classes, part)

    # === Trunks ===
    inputs = keras.Input(input_shape, name="inputs")
    if shared:
        features = dict.fromkeys(names, _trunk(input_shape, conv_filters, batch_norm_momentum, "trunk")(inputs))
    else:
        features = {t: _trunk(input_shape, conv_filters, batch_norm_momentum, f"trunk_{t}")(inputs)
                    for t in names}
    width = features[names[0]].shape[-1]

    # === Heads ===
    outputs = {}
    for task in [t for t in names if t != reusing]:  # the reused head first
        outputs[task] = blocks(width, head_units, classes[task], f"head_{task}")(features[task])
    if reusing is not None:
        lower = blocks(width, head_units[:reuse_after], None, f"head_{reusing}_lower")(features[reusing])
        scores = outputs[reused]
        if stop_gradient:
            scores = StopGradient(name=f"stop_gradient_{reused}")(scores)
        joined = keras.layers.Concatenate(name=f"concat_{reused}")([lower, scores])
        outputs[reusing] = blocks(joined.shape[-1], head_units[reuse_after:], classes[reusing],
                                  f"head_{reusing}_upper")(joined)
    return keras.Model(inputs, {t: outputs[t] for t in names}, name=name or f"coarse_fine_{architecture}")


def _variant(architecture):
    def build(**kwargs):
        if "architecture" in kwargs:
            raise ValueError(f"Model `coarse_fine_{architecture}` fixes `architecture`; build "
                             f"`coarse_fine` to choose it. Received: architecture={kwargs['architecture']!r}")
        return coarse_fine(architecture=architecture, **kwargs)

    build.__name__ = f"coarse_fine_{architecture}"
    build.__doc__ = f"`coarse_fine(architecture={architecture!r}, ...)`; see `coarse_fine`."
    return build


for _architecture in ARCHITECTURES:
    register(f"coarse_fine_{_architecture}")(_variant(_architecture))
