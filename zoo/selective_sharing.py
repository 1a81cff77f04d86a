"""Selective Sharing (Strezoski, van Noord & Worring, 2019; paper 002): a feature
extractor, a hard-shared representation layer, and identical task branches that merge
while training. The merging is `training.selective_sharing.SelectiveSharing`; this module
builds the model for any grouping of the tasks into branches.

Paper defaults (MNIST, section 4.2): convolutions of 20 then 40 5x5 filters, each batch
normalised and followed by 2x2 max pooling of stride 2, a 640-unit hard-shared layer, and
per task a branch of 100 -> 50 units ending in one sigmoid unit (ten one-vs-all tasks).
Choices the paper leaves open, written down here: valid convolutions (28 -> 24 -> 12 ->
8 -> 4, so the flattened maps are 4 x 4 x 40 = 640 wide, the shared layer's width);
ReLU after each batch norm and in every hidden Dense layer (section 4.2: "all nonterminal
FC units use the ReLU"); outputs are logits (the sigmoid lives in the binary loss and in
`predict_digits`).

The model is `head_<task>(branch_<first task of its group>(trunk(inputs)))`: a branch is
a `keras.Sequential` whose first layer, `branch_point`, is where gradients are captured;
each task keeps its own output layer `head_<task>` even when its branch is shared. A
grouping is a plain list of lists of task names (`groups_of(model)` reads it back), so a
grouped model rebuilds, saves, exports and reloads like every zoo model.
"""

import weakref

import keras
import numpy as np

from mtl_tf.layers import BatchNormalization
from mtl_tf.tasks import Task, as_tasks
from zoo.hard_sharing import _check_shape
from zoo.registry import register

DIGIT_TASKS = tuple(f"digit_{d}" for d in range(10))
# The builder's arguments for each model it built, so a merge can rebuild it.
_BUILT = weakref.WeakKeyDictionary()


def one_vs_all_tasks(names=DIGIT_TASKS):
    """Binary tasks, one per class name: the paper's homogeneous formulation."""
    return [Task(name, 1, kind="binary") for name in names]


def normalize_groups(groups, task_names):
    """`groups` (lists of task names or indices; tasks left out get a branch of their
    own) as a list of lists of names covering every task once, in task order."""
    task_names = list(task_names)
    if groups is None:
        groups = []
    if not isinstance(groups, (list, tuple)) or not all(isinstance(g, (list, tuple)) for g in groups):
        raise ValueError(f"`groups` must be a list of lists of task names. Received: groups={groups!r}")
    seen = {}
    for group in groups:
        for member in group:
            name = task_names[member] if isinstance(member, (int, np.integer)) and not isinstance(
                member, bool) and 0 <= member < len(task_names) else member
            if name not in task_names:
                raise ValueError(f"`groups` names {member!r}, which is not a task. Tasks: {task_names}")
            if name in seen:
                raise ValueError(f"`groups` puts task {name!r} in two groups. Received: groups={groups!r}")
            seen[name] = id(group)
    result = {}
    for name in task_names:
        key = seen.get(name, name)
        result.setdefault(key, []).append(name)
    return sorted(result.values(), key=lambda g: task_names.index(g[0]))


@register("selective_sharing")
def selective_sharing(tasks=None, input_shape=(28, 28, 1), groups=None, trunk="conv",
                      filters=(20, 40), kernel_size=5, shared_units=640, branch_units=(100, 50),
                      name="selective_sharing"):
    """Selective Sharing's multi-task net: a trunk, a shared layer, branches per group.

    Every branch starts with identical weights (the paper's starting condition), and so
    does every task's output layer of the same width.

    Args:
        tasks: dict of task name -> outputs, or a list of `mtl_tf.tasks.Task`. Defaults
            to the paper's ten one-vs-all digit tasks (`one_vs_all_tasks()`, binary).
        input_shape: tuple of int. Defaults to `(28, 28, 1)`.
        groups: list of lists of task names (or indices) sharing one branch; a task in no
            group has its own. Defaults to `None` (every task its own branch).
        trunk: `"conv"` (the paper's convolutions), `"dense"` (flatten only), or a Keras
            layer (your feature extractor; its output is flattened). Defaults to `"conv"`.
        filters: tuple of int. The conv trunk's filters. Defaults to `(20, 40)`.
        kernel_size: int. The conv trunk's kernel size. Defaults to `5`.
        shared_units: int. The hard-shared layer's width. Defaults to `640`.
        branch_units: tuple of int. Each branch's Dense widths; the first is the branch
            point. Defaults to `(100, 50)`.
        name: str. Defaults to `"selective_sharing"`.

    Example:
    ```python
    import numpy as np
    import zoo
    from zoo.selective_sharing import groups_of
    model = zoo.build("selective_sharing", groups=[["digit_2", "digit_3", "digit_5"]])
    assert groups_of(model)[2] == ["digit_2", "digit_3", "digit_5"]
    assert model(np.zeros((1, 28, 28, 1), "float32"))["digit_7"].shape == (1, 1)
    ```
    """
    # === Validate ===
    tasks = as_tasks(tasks if tasks is not None else one_vs_all_tasks())
    names = [t.name for t in tasks]
    if len(tasks) < 2:
        raise ValueError(f"Selective Sharing needs at least two tasks to group. Received: "
                         f"tasks={names}")
    input_shape = _check_shape(input_shape)
    groups = normalize_groups(groups, names)
    branch_units = tuple(branch_units or ())
    if not branch_units or not all(isinstance(u, int) and u > 0 for u in branch_units):
        raise ValueError(f"`branch_units` must be positive integers, the first being the branch "
                         f"point where gradients are captured. Received: branch_units={branch_units!r}")
    if not isinstance(shared_units, int) or shared_units < 1:
        raise ValueError(f"`shared_units` must be a positive integer (the hard-shared layer). "
                         f"Received: shared_units={shared_units!r}")
    if not (isinstance(trunk, keras.layers.Layer) or trunk in ("conv", "dense")):
        raise ValueError(f"`trunk` must be 'conv', 'dense' or a Keras layer. Received: trunk={trunk!r}")
    arguments = dict(tasks=[t.get_config() for t in tasks], input_shape=input_shape, trunk=trunk,
                     filters=tuple(filters), kernel_size=kernel_size, shared_units=shared_units,
                     branch_units=branch_units, name=name)

    # === Trunk, branches (one per group) and each task's own output ===
    inputs = keras.Input(input_shape, name="inputs")
    representation = _trunk(input_shape, trunk, filters, kernel_size, shared_units)(inputs)
    branches, heads = [], {}
    for group in groups:
        branch = _branch(shared_units, branch_units, f"branch_{group[0]}")
        branches.append(branch)
        features = branch(representation)
        for task_name in group:
            task = tasks[names.index(task_name)]
            heads[task_name] = _head(branch_units[-1], task.num_outputs, f"head_{task_name}")(features)
    for branch in branches[1:]:  # identical starting states
        branch.set_weights(branches[0].get_weights())
    first = {}
    for task_name in names:
        head = heads[task_name]._keras_history.operation
        width = int(head.output.shape[-1])
        if width in first:
            head.set_weights(first[width].get_weights())
        else:
            first[width] = head
    model = keras.Model(inputs, {t: heads[t] for t in names}, name=name)
    _BUILT[model] = arguments
    return model


def groups_of(model):
    """The model's grouping: lists of task names sharing a branch, in task order."""
    found = {}
    for task_name in model.output:
        head = model.get_layer(f"head_{task_name}")
        branch = head._inbound_nodes[0].arguments.keras_tensors[0]._keras_history.operation
        found.setdefault(id(branch), []).append(task_name)
    return list(found.values())


def branch_of(model, task_name):
    """The branch layer `task_name`'s output reads."""
    head = model.get_layer(f"head_{task_name}")
    return head._inbound_nodes[0].arguments.keras_tensors[0]._keras_history.operation


def regroup(model, groups, keep=None):
    """`model` rebuilt with `groups` (a coarser grouping than its own), and the (new
    variable, old variable) pairs whose values and optimizer state carry over: the trunk,
    every task's output layer, and for each new branch the old branch `keep` names for
    it (`keep[i]`: a task whose old branch survives as branch i; defaults to its first
    task's). Build it inside the distribution strategy's scope.
    """
    arguments = _BUILT.get(model)
    if arguments is None:
        raise ValueError(f"Model {model.name!r} was not built by `zoo.selective_sharing` in this "
                         f"process, so it cannot be rebuilt with other groups.")
    tasks = as_tasks(arguments["tasks"])
    groups = normalize_groups(groups, [t.name for t in tasks])
    new = selective_sharing(groups=groups, **arguments)
    keep = list(keep) if keep is not None else [g[0] for g in groups]
    pairs = list(zip(new.get_layer("trunk").weights, model.get_layer("trunk").weights))
    for group, survivor in zip(groups, keep):
        pairs += zip(new.get_layer(f"branch_{group[0]}").weights, branch_of(model, survivor).weights)
    for t in tasks:
        pairs += zip(new.get_layer(f"head_{t.name}").weights, model.get_layer(f"head_{t.name}").weights)
    return new, pairs


def _trunk(input_shape, trunk, filters, kernel_size, shared_units, name="trunk"):
    layers = [keras.Input(input_shape)]
    if trunk == "conv":
        if len(input_shape) == 2:
            layers.append(keras.layers.Reshape((*input_shape, 1)))
        for f in filters:
            layers += [keras.layers.Conv2D(f, kernel_size), BatchNormalization(),
                       keras.layers.ReLU(), keras.layers.MaxPooling2D(2, strides=2)]
    elif trunk != "dense":
        layers.append(trunk)
    layers += [keras.layers.Flatten(), keras.layers.Dense(shared_units, activation="relu")]
    return keras.Sequential(layers, name=name)


def _branch(shared_units, branch_units, name):
    return keras.Sequential(
        [keras.Input((shared_units,)),
         keras.layers.Dense(branch_units[0], activation="relu", name="branch_point")]
        + [keras.layers.Dense(u, activation="relu") for u in branch_units[1:]], name=name)


def _head(width, outputs, name):
    return keras.Sequential([keras.Input((width,)), keras.layers.Dense(outputs, name="logits")], name=name)


@register("selective_sharing_stl")
def selective_sharing_stl(tasks=None, input_shape=(28, 28, 1), trunk="conv", filters=(20, 40),
                          kernel_size=5, shared_units=640, branch_units=(100, 50),
                          name="selective_sharing_stl"):
    """The paper's single-task baseline: for each task a net of its own, the same trunk
    and one branch ending in the task's outputs (on MNIST, one net with a 10-way softmax,
    as logits). Layers are named `trunk_<task>`, `branch_<task>`, `head_<task>`.

    Args:
        tasks: dict of task name -> outputs, or a list of `mtl_tf.tasks.Task`. Defaults
            to `{"digit": 10}`.
        The others as `selective_sharing`.

    Example:
    ```python
    import numpy as np
    import zoo
    model = zoo.build("selective_sharing_stl")
    assert model(np.zeros((2, 28, 28, 1), "float32"))["digit"].shape == (2, 10)
    ```
    """
    tasks = as_tasks(tasks if tasks is not None else {"digit": 10})
    input_shape = _check_shape(input_shape)
    branch_units = tuple(branch_units)
    inputs = keras.Input(input_shape, name="inputs")
    outputs = {}
    for task in tasks:
        representation = _trunk(input_shape, trunk, filters, kernel_size, shared_units,
                                f"trunk_{task.name}")(inputs)
        features = _branch(shared_units, branch_units, f"branch_{task.name}")(representation)
        outputs[task.name] = _head(branch_units[-1], task.num_outputs, f"head_{task.name}")(features)
    return keras.Model(inputs, outputs, name=name)


def predict_digits(outputs, task_names=DIGIT_TASKS):
    """One-vs-all outputs -> the class whose task scores highest (the paper's accuracy)."""
    return np.argmax(np.concatenate([np.asarray(outputs[t]).reshape(-1, 1) for t in task_names], axis=1),
                     axis=1)
