"""Per-task gradient taps for models built of a shared trunk and one head per task.

A zoo model is `head_t(trunk(x))` for every task t, with `trunk` a `keras.Sequential`
whose last layer is the last shared Dense layer. `MultiTaskParts` runs that forward pass
itself, feeding each head its own `tf.identity` copy of the shared representation z, so
one gradient of the summed losses with respect to the copies gives every task's gradient
at z (DESIGN.md: about the cost of one backward pass). From those:

- (a) `representation`: dL_t/dz for every t, T x B x D;
- (b) `last_layer`: dL_t/dW for the last shared Dense layer's kernel, by one einsum with
  that layer's input (dz/dW is the same for every task);
- (c) `shared`: dL_t/dtheta for every shared weight, one trunk backward per task seeded
  with (a) (`output_gradients`), which skips the heads;
- (d) branch points: dL_t/dW of the first Dense layer on each task's path. Where that
  layer is the task's own, it is the layer's gradient from the same backward pass; where
  tasks share it (Selective Sharing's merged branches), `forward(taps=...)` exposes each
  task's pre-activation on its own path, and one matmul with the layer's input gives it.
Gradients of head weights come out of the same single backward pass, since each head only
sees its own loss.
"""

from typing import NamedTuple, Optional

import keras
import tensorflow as tf


class Forward(NamedTuple):
    """What `MultiTaskParts.forward` computed: the shared representation `z`, the last
    shared layer's input `h` (None when the trunk does not end in a Dense layer), each
    task's copy of z and output, and `taps`: for each task asked for, its branch point's
    (input, pre-activation) as computed on that task's own path."""

    z: tf.Tensor
    h: Optional[tf.Tensor]
    copies: dict
    outputs: dict
    taps: dict


class MultiTaskParts:
    """The trunk and heads of a zoo model, found by name (`trunk`, `head_<task>`).

    Between the trunk and a task's head there may be a chain of layers several tasks
    share (Selective Sharing's branches): a task's *path* is that chain and its head.
    Its *branch point* is the first Dense layer on its path."""

    def __init__(self, model, task_names):
        try:
            self.trunk = model.get_layer("trunk")
            self.heads = {t: model.get_layer(f"head_{t}") for t in task_names}
        except ValueError as error:
            raise ValueError(
                f"Model {model.name!r} is not made of a `trunk` and `head_<task>` parts for "
                f"tasks {list(task_names)}, so per-task gradients at the shared "
                f"representation cannot be tapped: {error}") from error
        self.task_names = tuple(task_names)
        last = self.trunk.layers[-1] if isinstance(self.trunk, keras.Sequential) else None
        self.last_dense = last if isinstance(last, keras.layers.Dense) else None
        self.paths = {t: [self.heads[t]] for t in task_names}

    @classmethod
    def find(cls, model, task_names):
        """The parts, or None when the model has no `trunk` and `head_<task>` layers.
        Raises when it has them but is more than paths on the trunk: training through
        the parts alone would skip its other layers."""
        try:
            parts = cls(model, task_names)
        except ValueError:
            return None
        parts.check_structure(model)
        return parts

    def check_structure(self, model):
        """Checks that every task's output is `head_<task>(...(trunk(inputs)))`, with only
        single-input layers between the trunk and the head, and records those paths."""
        def caller(tensor):
            history = getattr(tensor, "_keras_history", None)
            if history is None:
                return None, None
            node = history.operation._inbound_nodes[history.node_index]
            inputs = node.arguments.keras_tensors
            return history.operation, inputs[0] if len(inputs) == 1 else None

        problems = []
        inputs = model.inputs
        for task in self.task_names:
            head, tensor = caller(model.output[task])
            if head is not self.heads[task]:
                problems.append(f"output {task!r} is not the output of layer `head_{task}`")
                continue
            path = [head]
            layer, below = caller(tensor)
            while layer is not None and layer is not self.trunk and below is not None:
                path.insert(0, layer)
                layer, below = caller(below)
            if layer is not self.trunk:
                problems.append(f"`head_{task}` does not read the output of `trunk` through "
                                f"single-input layers")
            elif len(inputs) != 1 or below is not inputs[0]:
                problems.append("`trunk` does not read the model's input directly")
            self.paths[task] = path
        if problems:
            raise ValueError(
                f"Model {model.name!r} has `trunk` and `head_<task>` layers but is not just "
                f"paths on the trunk: {'; '.join(sorted(set(problems)))}. The trainer would skip "
                f"its other layers. Rename the layers, or build the model as "
                f"`head_<task>(trunk(inputs))`.")

    @property
    def shared_variables(self):
        return self.trunk.trainable_variables

    def path_variables(self, task):
        """The trainable variables on `task`'s path (its head and any branch before it)."""
        return _unique(v for layer in self.paths[task] for v in layer.trainable_variables)

    @property
    def head_variables(self):
        """Every variable of every path, once, in task order."""
        return _unique(v for t in self.task_names for v in self.path_variables(t))

    def branch_point(self, task):
        """The first Dense layer on `task`'s path, or None."""
        return next((layer for layer in _leaves(self.paths[task])
                     if isinstance(layer, keras.layers.Dense)), None)

    def forward(self, x, training=False, taps=()):
        """The model's forward pass, each task on its own copy of the representation (so
        a task's path is run once per task, even where tasks share it). For the tasks in
        `taps`, the branch point is computed from its weights so its input and
        pre-activation can be differentiated: `Forward.taps`."""
        if self.last_dense is not None:
            h = x
            for layer in self.trunk.layers[:-1]:
                h = layer(h, training=training)
            z = self.last_dense(h, training=training)
        else:
            h, z = None, self.trunk(x, training=training)
        copies = {t: tf.identity(z) for t in self.task_names}
        outputs, tapped = {}, {}
        for t in self.task_names:
            if t not in taps:
                y = copies[t]
                for layer in self.paths[t]:
                    y = layer(y, training=training)
                outputs[t] = y
                continue
            point, y = self.branch_point(t), copies[t]
            for layer in _leaves(self.paths[t]):
                if layer is point:
                    pre = tf.matmul(y, layer.kernel)
                    pre = tf.identity(pre + layer.bias if layer.use_bias else pre)
                    tapped[t] = (y, pre)
                    y = layer.activation(pre)
                else:
                    y = layer(y, training=training)
            outputs[t] = y
        return Forward(z, h, copies, outputs, tapped)


def _leaves(layers):
    """`layers` with every nested `keras.Sequential` replaced by its own layers."""
    result = []
    for layer in layers:
        result += _leaves(layer.layers) if isinstance(layer, keras.Sequential) else [layer]
    return result


def _unique(variables):
    seen, result = set(), []
    for v in variables:
        if id(v) not in seen:
            seen.add(id(v))
            result.append(v)
    return result


def representation_gradients(tape, summed_loss, copies, task_names):
    """(a): T x B x D per-task gradients at the shared representation, one backward pass.
    `summed_loss` is the sum of the task losses, computed inside `tape`."""
    grads = tape.gradient(summed_loss, [copies[t] for t in task_names])
    return tf.stack([tf.zeros_like(copies[t]) if g is None else g
                     for t, g in zip(task_names, grads)])


def last_layer_gradients(layer, layer_input, rep_grads):
    """(b): per-task gradients of `layer`'s kernel and bias, T x I x D and T x D, from the
    per-task gradients at its output. Backs through its elementwise activation once."""
    with tf.GradientTape() as tape:
        pre = tf.matmul(layer_input, layer.kernel)
        if layer.use_bias:
            pre = pre + layer.bias
        tape.watch(pre)
        out = layer.activation(pre)
    slope = tape.gradient(out, pre, output_gradients=tf.ones_like(out))  # act'(pre)
    pre_grads = rep_grads * slope[None]
    kernel = tf.einsum("bi,tbj->tij", layer_input, pre_grads)
    bias = tf.reduce_sum(pre_grads, axis=1)
    return kernel, bias


def shared_gradients(tape, z, variables, rep_grads):
    """(c): per task, the gradients of every shared variable (a list of T lists)."""
    return [tape.gradient(z, variables, output_gradients=rep_grads[t])
            for t in range(rep_grads.shape[0])]


def flatten(grads):
    """A list of per-variable gradients -> one vector."""
    return tf.concat([tf.reshape(g, [-1]) for g in grads], axis=0)


def unflatten(vector, like):
    """One vector -> tensors shaped like `like`."""
    sizes = [tf.size(v) for v in like]
    return [tf.reshape(p, tf.shape(v)) for p, v in zip(tf.split(vector, sizes), like)]
