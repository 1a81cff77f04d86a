"""Per-task gradients at the cut of any functional model's graph.

A model without `trunk` and `head_<task>` parts (MMoE, MTAN, a user's own) still has a
part that several tasks share and parts that one task owns: a layer call (a node of the
functional graph) is *shared* when two or more tasks' outputs depend on it, *owned* by
task t when only t's output does. The *cut* is every tensor a shared node computes and
an owned node reads (or that is a task's output itself). `GraphCut.forward` runs the
shared nodes once, gives each task its own copy of the cut, and runs each task's owned
nodes on its copy: one gradient of the summed losses with respect to the copies is every
task's gradient at the cut, as `MultiTaskParts` gives it at the trunk's output.

The cut's tensors are flattened per example and concatenated into one B x D tensor z,
each task reading views of its copy, so the trainer sees one representation whatever
the number of cut tensors (MTAN's several stages, MMoE's experts). A model has no clean
cut when a layer's weights serve two tasks' owned nodes, or a shared node and an owned
one (the same layer called on several paths): then `find` returns None and
gradient-level strategies combine each shared weight's per-task gradients instead.
"""

import numpy as np
import tensorflow as tf

from mtl_tf.gradients import Forward, MultiTaskParts, _unique


def find_parts(model, task_names, cut=True):
    """The model's `trunk` and `head_<task>` parts if it has them, else (when `cut`) its
    graph cut, else None."""
    parts = MultiTaskParts.find(model, task_names)
    if parts is None and cut:
        parts = GraphCut.find(model, task_names)
    return parts


def _producer(tensor):
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        return None
    return history.operation._inbound_nodes[history.node_index]


class GraphCut:
    """The shared nodes, each task's owned nodes and the cut between them."""

    last_dense = None  # no Dense layer is known to end the shared part

    def __init__(self, model, task_names):
        self.model = model
        self.task_names = tuple(task_names)
        order = [node for depth in sorted(model._nodes_by_depth, reverse=True)
                 for node in model._nodes_by_depth[depth]]
        rank = {id(node): i for i, node in enumerate(order)}
        self.output_tensors = {t: model.output[t] for t in self.task_names}
        users = {}  # node -> the tasks whose output depends on it
        for t, tensor in self.output_tensors.items():
            stack = [_producer(tensor)]
            while stack:
                node = stack.pop()
                if node is None or t in users.setdefault(id(node), set()):
                    continue
                users[id(node)].add(t)
                stack += [_producer(x) for x in node.input_tensors]
        computed = [n for n in order if id(n) in users and n.operation is not None and not n.is_input]
        self.shared_nodes = [n for n in computed if len(users[id(n)]) > 1]
        self.owned_nodes = {t: [n for n in computed if users[id(n)] == {t}] for t in self.task_names}
        shared_ids = {id(n) for n in self.shared_nodes}
        # Which shared nodes are downstream of a trainable weight: only those make a cut.
        trained = set()
        for node in sorted(self.shared_nodes, key=lambda n: rank[id(n)]):
            if _weights(node) or any(
                    id(_producer(x)) in trained for x in node.input_tensors if _producer(x) is not None):
                trained.add(id(node))
        cut, self.readers = {}, {}
        for t in self.task_names:
            reads = [x for n in self.owned_nodes[t] for x in n.input_tensors] + [self.output_tensors[t]]
            for x in reads:
                node = _producer(x)
                if node is not None and id(node) in shared_ids and id(node) in trained:
                    cut[id(x)] = x
                    self.readers.setdefault(id(x), set()).add(t)
        self.cut_tensors = list(cut.values())
        self.sizes = [int(np.prod(x.shape[1:])) for x in self.cut_tensors]

    @classmethod
    def find(cls, model, task_names):
        """The cut, or None when the model has none: no shared weights, a tensor without
        a batch axis, one layer's weights on several tasks' owned paths, or no tensor of
        the cut that two tasks read (Cross-stitch: each task reads only its own
        combination, so the tasks' gradients there never meet and their Gram matrix
        would say nothing of their conflicts)."""
        if not hasattr(model, "_nodes_by_depth"):
            return None
        cut = cls(model, task_names)
        if not cut.cut_tensors or any(x.shape[0] is not None or None in x.shape[1:] for x in cut.cut_tensors):
            return None
        if len(task_names) > 1 and all(len(readers) < 2 for readers in cut.readers.values()):
            return None
        owners = {}
        for key, nodes in [("shared", cut.shared_nodes)] + list(cut.owned_nodes.items()):
            for node in nodes:
                for v in _weights(node):
                    owners.setdefault(id(v), set()).add(key)
        if any(len(keys) > 1 for keys in owners.values()):
            return None
        return cut

    @property
    def shared_variables(self):
        return _unique(v for n in self.shared_nodes for v in _weights(n))

    def path_variables(self, task):
        return _unique(v for n in self.owned_nodes[task] for v in _weights(n))

    @property
    def head_variables(self):
        return _unique(v for t in self.task_names for v in self.path_variables(t))

    def branch_point(self, task):
        del task
        return None

    def forward(self, x, training=False, taps=()):
        """The model's forward pass, each task's owned nodes on its own copy of the cut."""
        if taps:
            raise ValueError("Branch-point taps need a model of `trunk` and `head_<task>` parts.")
        inputs = x if isinstance(x, (list, tuple)) else [x[i.name] for i in self.model.inputs] \
            if isinstance(x, dict) else [x]
        values = {id(i): v for i, v in zip(self.model.inputs, inputs)}
        for node in self.shared_nodes:
            _run(node, values, training)
        batch = tf.shape(values[id(self.cut_tensors[0])])[0]
        z = tf.concat([tf.reshape(values[id(c)], [batch, -1]) for c in self.cut_tensors], axis=1)
        copies = {t: tf.identity(z) for t in self.task_names}
        outputs = {}
        for t in self.task_names:
            local = dict(values)
            for c, piece in zip(self.cut_tensors, tf.split(copies[t], self.sizes, axis=1)):
                local[id(c)] = tf.reshape(piece, [batch, *c.shape[1:]])
            for node in self.owned_nodes[t]:
                _run(node, local, training)
            outputs[t] = local[id(self.output_tensors[t])]
        return Forward(z, None, copies, outputs, {})


def _weights(node):
    """A node's trainable weights (a Keras op such as a slice has none)."""
    return getattr(node.operation, "trainable_variables", [])


def _run(node, values, training):
    args, kwargs = node.arguments.fill_in(values)
    if getattr(node.operation, "_call_has_training_arg", False):
        kwargs = {**kwargs, "training": training}
    outputs = node.operation(*args, **kwargs)
    for tensor, value in zip(node.outputs, tf.nest.flatten(outputs)):
        values[id(tensor)] = value
