"""Hard parameter sharing: one shared trunk, one head per task (Caruana 1997)."""

import keras

from mtl_tf.tasks import as_tasks
from zoo.registry import register


def _check_shape(input_shape):
    shape = tuple(input_shape) if isinstance(input_shape, (list, tuple)) else None
    if not shape or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ValueError(f"`input_shape` must be a tuple of positive integers, without the "
                         f"batch axis. Received: input_shape={input_shape!r}")
    return shape


@register("hard_sharing")
def hard_sharing(tasks, input_shape, trunk="conv", filters=(32, 64), units=(128,),
                 head_units=(), dropout=0.0, name="hard_sharing"):
    """The textbook multi-task baseline: a shared trunk and one head per task.

    The model is built from named parts the trainer uses for per-task gradients: a
    `keras.Sequential` named `trunk` whose last layer is the last shared Dense layer (its
    output is the shared representation), and one `keras.Sequential` per task named
    `head_<task>`. Outputs are a dict keyed by task name (logits).

    Args:
        tasks: dict of task name -> number of outputs, or a list of `mtl_tf.tasks.Task`.
        input_shape: tuple of int. One example's shape, e.g. `(28, 28, 1)`.
        trunk: str. `"conv"` (3x3 conv + max-pool blocks, then dense) or `"dense"`
            (flatten, then dense). Defaults to `"conv"`.
        filters: tuple of int. Conv blocks' filters (conv trunk only). Defaults to `(32, 64)`.
        units: tuple of int. Shared dense layers; the last is the representation.
            Defaults to `(128,)`.
        head_units: tuple of int. Hidden layers of each head. Defaults to `()`.
        dropout: float. Dropout before each head's output layer. Defaults to `0.0`.
        name: str. The model's name. Defaults to `"hard_sharing"`.

    Example:
    ```python
    import numpy as np
    import zoo
    model = zoo.build("hard_sharing", tasks={"mnist": 10, "letters": 10},
                      input_shape=(28, 28, 1), trunk="dense", units=(64,))
    out = model(np.zeros((2, 28, 28, 1), "float32"))
    assert out["mnist"].shape == (2, 10)
    ```
    """
    # === Validate ===
    tasks = as_tasks(tasks)
    input_shape = _check_shape(input_shape)
    if trunk not in ("conv", "dense"):
        raise ValueError(f"`trunk` must be 'conv' or 'dense'. Received: trunk={trunk!r}")
    if not units:
        raise ValueError(f"`units` must name at least one shared dense layer. Received: units={units!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"`dropout` must lie in [0, 1). Received: dropout={dropout!r}")

    # === Shared trunk ===
    layers = [keras.Input(input_shape)]
    if trunk == "conv":
        if len(input_shape) == 2:
            layers.append(keras.layers.Reshape((*input_shape, 1)))
        for f in filters:
            layers += [keras.layers.Conv2D(f, 3, padding="same", activation="relu"),
                       keras.layers.MaxPooling2D()]
    layers.append(keras.layers.Flatten())
    layers += [keras.layers.Dense(u, activation="relu") for u in units]
    shared = keras.Sequential(layers, name="trunk")

    # === Task heads ===
    inputs = keras.Input(input_shape, name="inputs")
    representation = shared(inputs)
    outputs = {}
    for task in tasks:
        head = [keras.Input((units[-1],))]
        head += [keras.layers.Dense(u, activation="relu") for u in head_units]
        if dropout:
            head.append(keras.layers.Dropout(dropout))
        head.append(keras.layers.Dense(task.num_outputs, name="logits"))
        outputs[task.name] = keras.Sequential(head, name=f"head_{task.name}")(representation)
    return keras.Model(inputs, outputs, name=name)


@register("hard_sharing_mlp")
def hard_sharing_mlp(tasks, input_shape, **kwargs):
    """`hard_sharing` with a dense trunk of (256, 128)."""
    return hard_sharing(tasks, input_shape, **{"trunk": "dense", "units": (256, 128), **kwargs})
