"""The parts the mixture-of-experts families share (MMoE, OMoE, CGC, PLE, DSelect-k):
experts, softmax gates, their weighted sum, and the task towers.

An expert is a small network of the input: an MLP on a flat feature vector, or, on an
image, 3x3 conv + max-pool blocks then the MLP (`expert="conv"`, the default for images).
Each expert, gate and tower is its own layer, named so the trainer's graph cut (the
experts' outputs, which every task reads) and the gate logs find them.
"""

import keras

from mtl_tf.tasks import as_tasks
from zoo.hard_sharing import _check_shape


def check_positive(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    return value


def check_widths(name, value, allow_empty=False):
    widths = tuple(value) if isinstance(value, (list, tuple)) else None
    if widths is None or (not widths and not allow_empty) or not all(
            isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths):
        raise ValueError(f"`{name}` must be a tuple of positive integers"
                         f"{'' if allow_empty else ', at least one'}. Received: {name}={value!r}")
    return widths


def check_input(input_shape, kind, argument="expert"):
    """The input shape, and `kind` ("conv" or "dense", named `argument`): "conv" by
    default for images, only "dense" for flat vectors."""
    shape = _check_shape(input_shape)
    kinds = ("conv", "dense") if len(shape) >= 2 else ("dense",)
    kind = kind or kinds[0]
    if kind not in kinds:
        raise ValueError(f"`{argument}` must be one of {kinds} for input_shape={shape}. "
                         f"Received: {argument}={kind!r}")
    return shape, kind


class Mixture:
    """The checked arguments every mixture builder shares, and its input layers:
    `inputs`, and `flat` (the input flattened, what the gates read)."""

    def __init__(self, tasks, input_shape, expert, expert_filters, expert_units, tower_units, dropout):
        self.tasks = as_tasks(tasks)
        self.input_shape, self.expert = check_input(input_shape, expert)
        self.expert_filters = check_widths("expert_filters", expert_filters)
        self.expert_units = check_widths("expert_units", expert_units)
        self.tower_units = check_widths("tower_units", tower_units, allow_empty=True)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must lie in [0, 1). Received: dropout={dropout!r}")
        self.dropout = dropout

    def inputs(self):
        inputs = keras.Input(self.input_shape, name="inputs")
        flat = keras.layers.Flatten(name="flat_inputs")(inputs) if len(self.input_shape) > 1 else inputs
        return inputs, flat

    def experts(self, source, count, prefix, level=0):
        """`count` experts on `source`: the input at the first level, dense on a mixture after."""
        shape, kind = (self.input_shape, self.expert) if level == 0 else (tuple(source.shape[1:]), "dense")
        return [expert_network(shape, kind, self.expert_filters, self.expert_units, f"{prefix}{i}")(source)
                for i in range(count)]

    def towers(self, mixed):
        """Each task's tower on its mixture (`mixed[task name]`): the model's outputs."""
        return {t.name: tower(mixed[t.name], self.tower_units, t.num_outputs, self.dropout, f"tower_{t.name}")
                for t in self.tasks}


def expert_network(input_shape, kind, filters, units, name):
    """One expert: conv blocks on an image (`kind="conv"`), then dense ReLU layers."""
    layers = [keras.Input(input_shape)]
    if kind == "conv":
        if len(input_shape) == 2:
            layers.append(keras.layers.Reshape((*input_shape, 1)))
        for f in filters:
            layers += [keras.layers.Conv2D(f, 3, padding="same", activation="relu"), keras.layers.MaxPooling2D()]
    layers.append(keras.layers.Flatten())
    layers += [keras.layers.Dense(u, activation="relu") for u in units]
    return keras.Sequential(layers, name=name)


def gate(flat_input, experts, name):
    """softmax(W x) over `experts`, on the flattened input, without a bias (the MMoE
    paper's g(x) = softmax(W_g x) and DeepCTR's; LibMTL's has one)."""
    return keras.layers.Dense(experts, use_bias=False, activation="softmax", name=name)(flat_input)


@keras.saving.register_keras_serializable(package="mtl_tf")
class ExpertMixture(keras.layers.Layer):
    """sum_i g_i e_i: called on [gate (B x E), e_1, ..., e_E (each B x D)]."""

    def call(self, inputs):
        weights, *experts = inputs
        stacked = keras.ops.stack(experts, axis=1)  # B x E x D
        return keras.ops.sum(stacked * keras.ops.expand_dims(weights, -1), axis=1)

    def compute_output_shape(self, input_shapes):
        return input_shapes[1]


def tower(x, units, outputs, dropout, name):
    """A task's tower: dense ReLU layers, dropout, then its logits."""
    layers = [keras.Input(x.shape[1:])] + [keras.layers.Dense(u, activation="relu") for u in units]
    if dropout:
        layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.Dense(outputs, name="logits"))
    return keras.Sequential(layers, name=name)(x)
