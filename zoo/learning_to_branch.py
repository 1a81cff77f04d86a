"""Learning to Branch (Guo, Lee and Ulbricht, "Learning to Branch for Multi-Task Learning",
ICML 2020): a tree of layers whose branching is learned with Gumbel-softmax, then the
most probable tree is kept and trained.

The search network has `nodes[i]` copies ("nodes") of layer i. Every node of layer 0
reads the input; every node of a later layer, and every task's head, reads one node of
the layer before it, its *parent*, chosen by a `GumbelBranch` unit (`branch_<i>`, and
`branch_head_<task>` for each head) that holds one logit per (child, parent). In training each
forward pass samples one parent per child from Gumbel-softmax at the unit's temperature
and passes it on hard (one-hot forward, the soft sample's gradient backward:
straight-through), so every step trains one tree and the logits learn which trees lower
the loss; in inference each child reads its most probable parent. `tree_of(model)` reads
that tree (each task's path of nodes), and `learning_to_branch(..., tree=...)` builds it
alone, with fresh weights: the searched architecture, trained from scratch
(`training.learning_to_branch.BranchSearch` anneals the temperature during the search).

Facts and choices, with where they come from (the paper's text was not at hand here; its
facts come through its re-implementations):
- One parent per child, sampled hard in the forward pass: the paper ("every child node
  samples a single discrete action"), LibMTL `LibMTL/architecture/LTB.py`
  (`gumbel_softmax(..., hard=True)`).
- The tree widens layer by layer and the heads choose among the last layer's nodes: the
  paper's figures; zju-vipa/KamalEngine's re-implementation (`LEARNTOBRANCH.py`) widens
  as 2, 4, 8, 16, then the tasks. Default here `nodes[i] = min(T, 2^(i+1))`. LibMTL keeps
  T nodes at every layer.
- Logits start equal (every parent equally likely): LibMTL (ones), our zeros.
- Inference reads the argmax tree (KamalEngine, Ayotte's re-implementation); LibMTL keeps
  sampling at test time, which makes its evaluation random.
- Search then retrain the kept tree from scratch: the paper's two phases, KamalEngine and
  Ayotte (both re-initialise the weights); LibMTL has no second phase.
- No penalty on the number of branches: none of the re-implementations has one.

The Gumbel noise comes from a seeded `keras.random.SeedGenerator`, so every replica of a
distributed step draws the same tree; its state is a weight of the unit, so a resumed
run draws on where it stopped.
"""

import keras
from keras import ops

from mtl_tf.layers import BatchNormalization
from mtl_tf.tasks import as_tasks
from zoo.experts import check_input, check_widths
from zoo.registry import register


@keras.saving.register_keras_serializable(package="mtl_tf")
class GumbelBranch(keras.layers.Layer):
    """Called on a list of P same-shaped parent tensors; returns `children` tensors, each
    one parent (sampled in training, the most probable in inference).

    Weights: `logits` (children x parents, trained; the unit's logits are `logit_scale`
    times them, so Adam moves them `logit_scale` times as fast as other weights), and,
    not trained, `temperature` and `searching` (1.0: the logits learn; 0.0: they get no gradient, the warm-up's uniform
    sampling).
    """

    def __init__(self, children, temperature=10.0, seed=None, logit_scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.children, self.initial_temperature, self.seed = children, temperature, seed
        self.logit_scale = logit_scale
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shapes):
        self.parents = len(input_shapes)
        self.logits = self.add_weight(shape=(self.children, self.parents), initializer="zeros", name="logits")
        self.temperature = self.add_weight(shape=(), initializer=keras.initializers.Constant(
            self.initial_temperature), trainable=False, name="temperature")
        self.searching = self.add_weight(shape=(), initializer="ones", trainable=False, name="searching")
        # A weight, so checkpoints and `.keras` files keep where the draws are.
        self.noise_state = self.seed_generator.state

    def probabilities(self):
        """children x parents: each child's distribution over its parents."""
        return ops.softmax(self.logit_scale * self.logits, axis=-1)

    def call(self, inputs, training=None):
        stacked = ops.stack(inputs, axis=0)  # P x B x ...
        if training:
            scaled = self.logit_scale * self.logits
            frozen = ops.stop_gradient(scaled)
            logits = frozen + self.searching * (scaled - frozen)
            uniform = keras.random.uniform(ops.shape(logits), minval=1e-10, maxval=1.0, seed=self.seed_generator)
            soft = ops.softmax((logits - ops.log(-ops.log(uniform))) / self.temperature, axis=-1)
            hard = ops.one_hot(ops.argmax(soft, axis=-1), self.parents, dtype=soft.dtype)
            weights = hard + (soft - ops.stop_gradient(soft))  # exactly one-hot forward
        else:
            weights = ops.one_hot(ops.argmax(self.logits, axis=-1), self.parents, dtype=stacked.dtype)
        mixed = ops.tensordot(ops.cast(weights, stacked.dtype), stacked, axes=1)  # C x B x ...
        return [mixed[c] for c in range(self.children)]

    def compute_output_shape(self, input_shapes):
        return [tuple(input_shapes[0])] * self.children

    def get_config(self):
        return {**super().get_config(), "children": self.children, "temperature": self.initial_temperature,
                "seed": self.seed, "logit_scale": self.logit_scale}


def default_nodes(depth, tasks):
    """The search tree's width per layer: 2, 4, 8, ... up to the number of tasks."""
    return tuple(min(tasks, 2 ** (i + 1)) for i in range(depth))


def branch_units(model):
    """The model's `GumbelBranch` units in layer order, the heads' last."""
    return [layer for layer in model.layers if isinstance(layer, GumbelBranch)]


def tree_of(model):
    """The most probable tree of a search network: {task: (node of layer 0, node of layer
    1, ...)}, each task's path from its head's parent down to the input."""
    units = {layer.name: layer for layer in branch_units(model)}
    layers = {int(layer.name.split("_")[1]) for layer in model.layers if layer.name.startswith("node_")}
    if not units or not layers:
        raise ValueError(f"Model {model.name!r} is not a Learning to Branch search network (it has no "
                         f"GumbelBranch units).")

    def parent(name, child):  # a layer of one node has no unit: its children read node 0
        return int(ops.argmax(units[name].logits[child])) if name in units else 0

    tree = {}
    for task in model.output:
        path = [parent(f"branch_head_{task}", 0)]
        for i in range(max(layers), 0, -1):
            path.append(parent(f"branch_{i}", path[-1]))
        tree[task] = tuple(reversed(path))
    return tree


def check_tree(tree, task_names, depth):
    """`tree` ({task: path of node indices, one per layer}) as a dict of tuples, refusing
    a path of another length, a negative index, or two paths that meet at a node after
    parting (a node has one parent)."""
    if not isinstance(tree, dict) or sorted(tree) != sorted(task_names):
        raise ValueError(f"`tree` must map every task ({list(task_names)}) to its path of node indices, "
                         f"one per layer. Received: tree={tree!r}")
    paths = {}
    for task, path in tree.items():
        path = tuple(path) if isinstance(path, (list, tuple)) else None
        if path is None or len(path) != depth or not all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in path):
            raise ValueError(f"`tree[{task!r}]` must be {depth} node indices (one per layer, >= 0). "
                             f"Received: {tree[task]!r}")
        paths[task] = path
    parent = {}
    for task, path in paths.items():
        for i in range(1, depth):
            if parent.setdefault((i, path[i]), path[i - 1]) != path[i - 1]:
                raise ValueError(f"`tree` gives node {path[i]} of layer {i} two parents ({path[i - 1]} on "
                                 f"{task!r}'s path, {parent[(i, path[i])]} on another's): it is not a tree.")
    return paths


@register("learning_to_branch")
def learning_to_branch(tasks, input_shape, network=None, filters=(32, 64), units=(128,), nodes=None, tree=None,
                       temperature=10.0, logit_scale=1.0, seed=None, kernel_size=3, padding="same",
                       batch_norm=False, dropout=0.0, name="learning_to_branch"):
    """Learning to Branch's search network (`tree=None`), or the tree `tree` it found.

    Layer i is a conv block (`network="conv"`, images: a `kernel_size` convolution, a
    batch norm if `batch_norm`, ReLU, 2x2 max pooling) for each of `filters`, then a
    dense ReLU layer for each of `units` (`"dense"`: dense only). Its
    nodes are `node_<i>_<k>`; each task's head `head_<task>` is one Dense layer (logits).
    Outputs are a dict keyed by task name.

    Args:
        tasks: dict of task name -> number of outputs, or a list of `mtl_tf.tasks.Task`.
        input_shape: tuple of int. An image or a flat feature vector.
        network: `"conv"` or `"dense"`. Defaults to `"conv"` for images.
        filters: tuple of int. The conv layers. Defaults to `(32, 64)`.
        units: tuple of int. The dense layers. Defaults to `(128,)`.
        nodes: tuple of int, one per layer: the search network's nodes. Defaults to
            `min(T, 2^(i+1))` at layer i.
        tree: dict of task name -> its path (one node index per layer), as `tree_of`
            returns, or `None` for the search network. Defaults to `None`.
        temperature: float > 0. The search's initial Gumbel-softmax temperature.
            Defaults to `10.0`.
        logit_scale: float > 0. The branching logits are this times their weights, so
            Adam moves them this many times faster than the network's weights (a
            learning rate of their own, as the re-implementations give them). Defaults
            to `1.0` (LibMTL's: one learning rate).
        seed: int or None. Seeds the Gumbel noise. Defaults to `None`.
        kernel_size: int. The convolutions' size. Defaults to `3`.
        padding: `"same"` or `"valid"`. The convolutions' padding. Defaults to `"same"`.
        batch_norm: bool. A batch norm after each convolution. Defaults to `False`.
        dropout: float. Before each head. Defaults to `0.0`.
        name: str. Defaults to `"learning_to_branch"`.

    Example:
    ```python
    import numpy as np
    import zoo
    from zoo.learning_to_branch import tree_of
    search = zoo.build("learning_to_branch", tasks={"a": 3, "b": 2}, input_shape=(8,), units=(16, 16))
    tree = tree_of(search)  # after training: the most probable tree
    model = zoo.build("learning_to_branch", tasks={"a": 3, "b": 2}, input_shape=(8,), units=(16, 16),
                      tree=tree)
    assert model(np.zeros((1, 8), "float32"))["b"].shape == (1, 2)
    ```
    """
    tasks = as_tasks(tasks)
    input_shape, network = check_input(input_shape, network, "network")
    filters = check_widths("filters", filters) if network == "conv" else ()
    units = check_widths("units", units)
    depth = len(filters) + len(units)
    if nodes is None:
        nodes = default_nodes(depth, len(tasks))
    if not isinstance(nodes, (list, tuple)) or len(nodes) != depth or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in nodes):
        raise ValueError(f"`nodes` must be {depth} positive integers, one per layer (the network's "
                         f"{len(filters)} conv blocks, then its {len(units)} dense layers). Received: nodes={nodes!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"`temperature` must be a positive number. Received: temperature={temperature!r}")
    if isinstance(logit_scale, bool) or not isinstance(logit_scale, (int, float)) or not logit_scale > 0:
        raise ValueError(f"`logit_scale` must be a positive number. Received: logit_scale={logit_scale!r}")
    if padding not in ("same", "valid"):
        raise ValueError(f"`padding` must be 'same' or 'valid'. Received: padding={padding!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"`dropout` must lie in [0, 1). Received: dropout={dropout!r}")
    paths = None if tree is None else check_tree(tree, [t.name for t in tasks], depth)

    def node(i, k, x):
        if i == len(filters) and len(x.shape) > 2:
            x = keras.layers.Flatten(name=f"node_{i}_{k}_flatten")(x)
        if i < len(filters):
            block = [keras.layers.Conv2D(filters[i], kernel_size, padding=padding)]
            block += [BatchNormalization()] if batch_norm else []
            return keras.Sequential(block + [keras.layers.ReLU(), keras.layers.MaxPooling2D()], name=f"node_{i}_{k}")(x)
        return keras.layers.Dense(units[i - len(filters)], activation="relu", name=f"node_{i}_{k}")(x)

    def offset(seed, k):  # each unit draws its own noise
        return None if seed is None else seed + k

    inputs = keras.Input(input_shape, name="inputs")
    x = keras.layers.Reshape((*input_shape, 1))(inputs) if network == "conv" and len(input_shape) == 2 else inputs
    if paths is None:
        layer = [node(0, k, x) for k in range(nodes[0])]
        def choose(children, parents, k, name):  # one parent: nothing to choose
            if len(parents) == 1:
                return parents * children
            return GumbelBranch(children, float(temperature), offset(seed, k), logit_scale, name=name)(parents)

        for i in range(1, depth):
            layer = [node(i, k, p) for k, p in enumerate(choose(nodes[i], layer, i, f"branch_{i}"))]
        # One unit per head: its logits are the task's own, so the last layer's nodes
        # are the graph's cut (every task reads them) and gradient-level strategies
        # combine the tasks' gradients there.
        features = {t.name: choose(1, layer, depth + j, f"branch_head_{t.name}")[0] for j, t in enumerate(tasks)}
    else:
        built = {}  # (layer, node) -> output; only the nodes some task's path goes through
        for task in tasks:
            source = x
            for i, k in enumerate(paths[task.name]):
                if (i, k) not in built:
                    built[(i, k)] = node(i, k, source)
                source = built[(i, k)]
        features = {t.name: built[(depth - 1, paths[t.name][-1])] for t in tasks}
    outputs = {}
    for task in tasks:
        feature = features[task.name]
        if dropout:
            feature = keras.layers.Dropout(dropout, name=f"{task.name}_dropout")(feature)
        outputs[task.name] = keras.layers.Dense(task.num_outputs, name=f"head_{task.name}")(feature)
    return keras.Model(inputs, outputs, name=name)
