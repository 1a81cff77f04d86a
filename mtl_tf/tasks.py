"""Task specs and masked per-task losses.

A task is a name, a kind and an output size. Labels mark the examples a task has no
label for, so pooled data sets (each example labelled for one task) and semi-supervised
data (some examples unlabelled) train each task only on its own examples:

- multi-class: an int label, `-1` where unlabelled;
- binary: a 0/1 label, `-1` where unlabelled;
- regression and reconstruction: a float target, `NaN` where unlabelled (any NaN in an
  example's target masks the whole example).

A reconstruction whose target is computed by the model itself (a denoising auto-encoder
on a hidden layer, paper 001) has `target="output"`: the model's output holds the
reconstruction and its target, stacked on axis 1; its labels are optional (zeros, or NaN
to mask an example).

`Task.loss(y_true, y_pred, mask=None)` is the mean loss over the labelled examples only,
0 when a batch has none; an explicit `mask` (1 = labelled) combines with the label's own.
"""

import dataclasses

import numpy as np
import tensorflow as tf

KINDS = ("multiclass", "binary", "regression", "reconstruction")


@dataclasses.dataclass(frozen=True)
class Task:
    """One task of a multi-task model.

    Args:
        name: str. The task's name; the model's output of the same name.
        num_outputs: int. Classes for multi-class, 1 for binary, target width otherwise.
        kind: str. One of `"multiclass"`, `"binary"`, `"regression"`, `"reconstruction"`.
            Defaults to `"multiclass"`.
        metric: str. The metric reported per task: `"accuracy"` for classification,
            `"mse"` otherwise. Defaults by kind.
        higher_is_better: bool. Whether a larger `metric` is better. Defaults by metric.
        from_logits: bool. Outputs are logits (no softmax/sigmoid). Defaults to `True`.
        target: str. `"label"` (the labels are the targets) or, for a reconstruction,
            `"output"`: the output is (reconstruction, target) on axis 1, the loss is the
            sigmoid cross-entropy of the reconstruction's logits (`from_logits`, targets in
            [0, 1]) or the squared error, and the metric the squared error. Defaults to
            `"label"`.

    Example:
    ```python
    from mtl_tf.tasks import Task
    task = Task("mnist", 10)
    assert task.kind == "multiclass" and task.metric == "accuracy" and task.higher_is_better
    ```
    """

    name: str
    num_outputs: int
    kind: str = "multiclass"
    metric: str = None
    higher_is_better: bool = None
    from_logits: bool = True
    target: str = "label"

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"`name` must be a Python identifier (it names an output). "
                             f"Received: name={self.name!r}")
        if self.kind not in KINDS:
            raise ValueError(f"`kind` must be one of {KINDS}. Received: kind={self.kind!r}")
        if not isinstance(self.num_outputs, int) or self.num_outputs < 1:
            raise ValueError(f"`num_outputs` must be a positive integer. Received: "
                             f"num_outputs={self.num_outputs!r} for task {self.name!r}")
        if self.kind == "binary" and self.num_outputs != 1:
            raise ValueError(f"A binary task has one output. Received: num_outputs="
                             f"{self.num_outputs} for task {self.name!r}")
        if self.target not in ("label", "output"):
            raise ValueError(f"`target` must be 'label' or 'output'. Received: target={self.target!r}")
        if self.target == "output" and self.kind != "reconstruction":
            raise ValueError(f"Only a reconstruction task reads its target from the output. Received: "
                             f"target='output' for {self.kind} task {self.name!r}")
        if self.metric is None:
            classification = self.kind in ("multiclass", "binary")
            object.__setattr__(self, "metric", "accuracy" if classification else "mse")
        if self.higher_is_better is None:
            object.__setattr__(self, "higher_is_better", self.metric == "accuracy")

    # --- losses -----------------------------------------------------------------------
    def label_mask(self, y_true):
        """1.0 where the example carries a label for this task, else 0.0 (shape N)."""
        y_true = tf.convert_to_tensor(y_true)
        if self.kind in ("multiclass", "binary"):
            return tf.cast(tf.reshape(y_true, [tf.shape(y_true)[0], -1])[:, 0] >= 0, tf.float32)
        flat = tf.reshape(tf.cast(y_true, tf.float32), [tf.shape(y_true)[0], -1])
        return 1.0 - tf.cast(tf.reduce_any(tf.math.is_nan(flat), axis=1), tf.float32)

    def per_example_loss(self, y_true, y_pred):
        """The loss of every example (shape N), computed safely on unlabelled ones too."""
        y_pred = tf.cast(y_pred, tf.float32)
        if self.kind == "multiclass":
            labels = tf.maximum(tf.reshape(tf.cast(y_true, tf.int32), [-1]), 0)
            if self.from_logits:
                return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=y_pred)
            picked = tf.gather(y_pred, labels, batch_dims=1)
            return -tf.math.log(tf.clip_by_value(picked, 1e-7, 1.0))
        if self.kind == "binary":
            labels = tf.maximum(tf.reshape(tf.cast(y_true, tf.float32), [-1]), 0.0)
            logits = tf.reshape(y_pred, [-1])
            if self.from_logits:
                return tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
            p = tf.clip_by_value(logits, 1e-7, 1 - 1e-7)
            return -(labels * tf.math.log(p) + (1 - labels) * tf.math.log(1 - p))
        if self.target == "output":
            # Unstacked, not sliced: the gradients of two slices of the stacked output are two
            # full-size scatters and their sum, which made paper 001's step 2.1x slower.
            flat, target = (tf.reshape(part, [tf.shape(y_pred)[0], -1]) for part in tf.unstack(y_pred, 2, axis=1))
            target = tf.stop_gradient(target)
            if self.from_logits:
                return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=flat), axis=1)
            return tf.reduce_mean(tf.square(flat - target), axis=1)
        target = tf.reshape(tf.cast(y_true, tf.float32), [tf.shape(y_pred)[0], -1])
        target = tf.where(tf.math.is_nan(target), tf.zeros_like(target), target)
        flat = tf.reshape(y_pred, [tf.shape(y_pred)[0], -1])
        return tf.reduce_mean(tf.square(flat - target), axis=1)

    def loss_sum(self, y_true, y_pred, mask=None):
        """(sum of the labelled examples' losses, number of labelled examples)."""
        weights = self.label_mask(y_true)
        if mask is not None:
            weights = weights * tf.reshape(tf.cast(mask, tf.float32), [-1])
        return tf.reduce_sum(self.per_example_loss(y_true, y_pred) * weights), tf.reduce_sum(weights)

    def loss(self, y_true, y_pred, mask=None):
        """Mean loss over the labelled examples (0 when none are labelled)."""
        return tf.math.divide_no_nan(*self.loss_sum(y_true, y_pred, mask))

    def metric_sum(self, y_true, y_pred):
        """The metric summed over the labelled examples."""
        return tf.reduce_sum(self.correct(y_true, y_pred) * self.label_mask(y_true))

    def correct(self, y_true, y_pred):
        """Per-example metric value (1/0 for accuracy, squared error for mse), shape N."""
        if self.metric == "accuracy":
            if self.kind == "binary":
                predicted = tf.cast(tf.reshape(y_pred, [-1]) > (0.0 if self.from_logits else 0.5),
                                    tf.int64)
            else:
                predicted = tf.argmax(y_pred, axis=-1)
            return tf.cast(tf.equal(predicted, tf.reshape(tf.cast(y_true, tf.int64), [-1])),
                           tf.float32)
        if self.target == "output":
            reconstruction, target = tf.unstack(tf.cast(y_pred, tf.float32), 2, axis=1)
            if self.from_logits:
                reconstruction = tf.sigmoid(reconstruction)
            return tf.reduce_mean(tf.reshape(tf.square(reconstruction - target),
                                             [tf.shape(y_pred)[0], -1]), axis=1)
        return self.per_example_loss(y_true, y_pred)

    def get_config(self):
        config = dataclasses.asdict(self)
        if config["target"] == "label":  # as configs were before the field existed
            del config["target"]
        return config


def as_tasks(tasks):
    """Normalises `tasks`: a dict name -> number of classes, a list of `Task`s or of their
    config dicts. Returns a tuple of `Task`s with unique names."""
    if isinstance(tasks, dict):
        result = tuple(t if isinstance(t, Task) else Task(name, t) for name, t in tasks.items())
    elif isinstance(tasks, (list, tuple)):
        result = tuple(t if isinstance(t, Task) else Task(**t) for t in tasks)
    else:
        raise ValueError("`tasks` must be a dict of task name -> number of outputs, or a list "
                         f"of `Task`s. Received: tasks={tasks!r}")
    if not result:
        raise ValueError(f"`tasks` must name at least one task. Received: tasks={tasks!r}")
    names = [t.name for t in result]
    if len(set(names)) != len(names):
        raise ValueError(f"Task names must be unique. Received: {names}")
    return result


def infer_tasks(model):
    """A multi-class task per output of `model` (a dict keyed by task name)."""
    spec = getattr(model, "output", None)
    if not isinstance(spec, dict):
        raise ValueError(f"Model {model.name!r} must return a dict of outputs keyed by task "
                         f"name. Received outputs: {spec!r}")
    return tuple(Task(name, int(tensor.shape[-1])) for name, tensor in spec.items())


def as_labels(y, task_names):
    """`y` as a dict keyed by task; a bare array is accepted for a single task."""
    if isinstance(y, dict):
        missing = [t for t in task_names if t not in y]
        extra = [k for k in y if k not in task_names]
        if missing or extra:
            raise ValueError(f"The label dict must have one entry per task {list(task_names)}. "
                             f"Missing: {missing}; unknown: {extra}")
        return {t: y[t] for t in task_names}
    if len(task_names) == 1:
        return {task_names[0]: y}
    raise ValueError(f"Labels for {len(task_names)} tasks must be a dict keyed by task name "
                     f"{list(task_names)}. Received: {type(y).__name__}")


def task_labels(tasks, y, n, zeros=np.zeros):
    """`y` as a dict keyed by the names of `tasks`, with `zeros(n, "float32")` for the
    tasks whose targets the model computes (`target="output"`) when not given. A bare
    array is the labels of the one task that reads labels."""
    names = [t.name for t in tasks]
    own = [t.name for t in tasks if t.target == "output"]
    if not own:
        return as_labels(y, names)
    if not isinstance(y, dict):
        readers = [t for t in names if t not in own]
        y = as_labels(y, readers) if len(readers) == 1 else as_labels(y, names)
    return as_labels({**{t: zeros(n, "float32") for t in own}, **y}, names)
