"""Cross-stitch networks (Misra, Shrivastava, Gupta and Hebert, "Cross-stitch Networks for
Multi-task Learning", CVPR 2016).

One network per task, all of the same shape; after chosen layers a cross-stitch unit
replaces each task's activation by a learned linear combination of every task's,
x~_t = sum_s alpha_ts x_s (the paper's Eq. 1, one T x T matrix per unit). Facts from the
paper: alpha starts at alpha_S = 0.9 on a task's own activation and alpha_D = 0.1 on the
other's (its best initialisation, two tasks); for T tasks the 0.1 is split equally among
the others, so each row still sums to 1. LibMTL starts every alpha at 1 (a sum, not a
combination) and stitches after each ResNet stage. The paper trains the units with a
learning rate 10^2 to 10^3 times the networks'; here one optimizer trains all.

Every layer but the heads mixes the tasks, so the trainer finds no graph cut that tells
the tasks' gradients apart: gradient-level strategies combine the per-task gradients of
every shared weight (`mode="parameters"`).
"""

import keras

from mtl_tf.tasks import as_tasks
from zoo.experts import check_input, check_widths
from zoo.registry import register


@keras.saving.register_keras_serializable(package="mtl_tf")
class CrossStitch(keras.layers.Layer):
    """Called on a list of T same-shaped tensors; returns the T combinations."""

    def __init__(self, tasks, alpha_self=0.9, **kwargs):
        super().__init__(**kwargs)
        self.tasks, self.alpha_self = tasks, alpha_self

    def build(self, input_shapes):
        t = self.tasks
        other = (1 - self.alpha_self) / (t - 1) if t > 1 else 0.0
        initial = [[self.alpha_self if i == j else other for j in range(t)] for i in range(t)]
        self.alpha = self.add_weight(shape=(t, t), initializer=keras.initializers.Constant(initial), name="alpha")

    def call(self, inputs):
        stacked = keras.ops.stack(inputs, axis=0)  # T x B x ...
        mixed = keras.ops.tensordot(self.alpha, stacked, axes=1)
        return [mixed[i] for i in range(self.tasks)]

    def compute_output_shape(self, input_shapes):
        return list(input_shapes)

    def get_config(self):
        return {**super().get_config(), "tasks": self.tasks, "alpha_self": self.alpha_self}


@register("cross_stitch")
def cross_stitch(tasks, input_shape, network=None, filters=(32, 64), units=(128,), stitch_after=None,
                 alpha_self=0.9, dropout=0.0, name="cross_stitch"):
    """One network per task, stitched after the layers `stitch_after` names. Outputs are
    a dict keyed by task name (logits); the units are the layers `stitch_<i>`.

    Each network is `hard_sharing`'s trunk: 3x3 conv + max-pool blocks (`network="conv"`,
    the default for images) and then dense ReLU layers, or dense layers only
    (`"dense"`). Layer i counts the conv blocks, then the dense layers, from 0.

    Args:
        tasks: dict of task name -> number of outputs, or a list of `mtl_tf.tasks.Task`.
        input_shape: tuple of int. An image or a flat feature vector.
        network: `"conv"` or `"dense"`. Defaults to `"conv"` for images.
        filters: tuple of int. The conv blocks. Defaults to `(32, 64)`.
        units: tuple of int. The dense layers. Defaults to `(128,)`.
        stitch_after: tuple of int. The layers followed by a cross-stitch unit.
            Defaults to every layer.
        alpha_self: float in [0, 1]. Each unit's initial weight on a task's own
            activation. Defaults to `0.9` (the paper's).
        dropout: float. Before each head's logits. Defaults to `0.0`.
        name: str. Defaults to `"cross_stitch"`.
    """
    tasks = as_tasks(tasks)
    input_shape, network = check_input(input_shape, network, "network")
    filters = check_widths("filters", filters) if network == "conv" else ()
    units = check_widths("units", units)
    depth = len(filters) + len(units)
    stitch_after = tuple(range(depth)) if stitch_after is None else stitch_after
    if not isinstance(stitch_after, (list, tuple)) or not all(
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i < depth for i in stitch_after):
        raise ValueError(f"`stitch_after` must list layer indices from 0 to {depth - 1} (the network's "
                         f"{len(filters)} conv blocks, then its {len(units)} dense layers). "
                         f"Received: stitch_after={stitch_after!r}")
    if isinstance(alpha_self, bool) or not isinstance(alpha_self, (int, float)) or not 0 <= alpha_self <= 1:
        raise ValueError(f"`alpha_self` must be a number in [0, 1]. Received: alpha_self={alpha_self!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"`dropout` must lie in [0, 1). Received: dropout={dropout!r}")

    inputs = keras.Input(input_shape, name="inputs")
    x = keras.layers.Reshape((*input_shape, 1))(inputs) if network == "conv" and len(input_shape) == 2 else inputs
    streams = [x] * len(tasks)
    for i in range(depth):
        def layer(task, i=i):
            if i < len(filters):
                return keras.Sequential([keras.layers.Conv2D(filters[i], 3, padding="same", activation="relu"),
                                         keras.layers.MaxPooling2D()], name=f"{task.name}_block_{i}")
            return keras.layers.Dense(units[i - len(filters)], activation="relu", name=f"{task.name}_dense_{i}")

        if i == len(filters):
            streams = [keras.layers.Flatten(name=f"{t.name}_flatten")(s) for t, s in zip(tasks, streams)]
        streams = [layer(t)(s) for t, s in zip(tasks, streams)]
        if i in stitch_after and len(tasks) > 1:
            streams = CrossStitch(len(tasks), float(alpha_self), name=f"stitch_{i}")(streams)
    outputs = {}
    for task, stream in zip(tasks, streams):
        if dropout:
            stream = keras.layers.Dropout(dropout, name=f"{task.name}_dropout")(stream)
        outputs[task.name] = keras.layers.Dense(task.num_outputs, name=f"head_{task.name}")(stream)
    return keras.Model(inputs, outputs, name=name)
