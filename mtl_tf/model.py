"""Keras-native multi-task training: `compile()` with any weighting strategy, then Keras's
own `fit`, `evaluate` and `predict`.

In Keras 3 `loss_weights` are plain floats (keras-team/keras#20294), so neither a
schedule nor a gradient-level method fits in `compile`. `MultiTaskModel` is a functional
model whose `compile` takes a `weighting` (any registered strategy) and whose
`train_step` runs `mtl_tf.step.MultiTaskStep`, the very step the Trainer runs: same
losses, same per-task gradients at the graph cut, same combination, under one device or
MirroredStrategy. Keras's MultiWorkerMirroredStrategy `fit` fails
(keras-team/keras#20585): there, use `training.Trainer`.

The weighting's state (uncertainty's log variances, DWA's loss history, PCGrad's draw
counter...) is saved with the model's own variables, so `.keras` files, `save_weights`
and `BackupAndRestore` keep it, and `compile` is in the `.keras` file's config.
"""

import keras
import tensorflow as tf
from keras import ops

from mtl_tf import weighting as weighting_lib
from mtl_tf.step import NON_FINITE, MultiTaskStep, epoch_logs, prepare_parts
from mtl_tf.tasks import Task, as_tasks, infer_tasks, task_labels

# Keras losses that name a task kind (outputs as logits, as the zoo's are).
_LOSS_KINDS = {"sparse_categorical_crossentropy": "multiclass", "binary_crossentropy": "binary",
               "mse": "regression", "mean_squared_error": "regression"}


@keras.saving.register_keras_serializable(package="mtl_tf")
class MultiTaskModel(keras.Model):
    """A functional model with dict outputs keyed by task, trained by Keras's `fit` with
    any weighting strategy.

    Build it like any functional model, `MultiTaskModel(inputs, outputs)` with `outputs`
    a dict keyed by task, or from one: `MultiTaskModel.from_model(zoo.build(...))` (the
    same layers and weights).

    Example:
    ```python
    import numpy as np
    import keras
    import mtl_tf
    inputs = keras.Input((8,))
    shared = keras.layers.Dense(16, activation="relu")(inputs)
    model = mtl_tf.MultiTaskModel(inputs, {"a": keras.layers.Dense(3)(shared),
                                           "b": keras.layers.Dense(2)(shared)})
    model.compile(optimizer="adam", weighting="pcgrad")
    x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
    y = {"a": (x[:, 0] > 0).astype("int64"), "b": (x[:, 1] > 0).astype("int64")}
    history = model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert {"a_loss", "b_accuracy", "weight_a"} <= set(history.history)
    ```
    """

    @classmethod
    def from_model(cls, model, name=None):
        """A `MultiTaskModel` on `model`'s graph (its layers and weights, shared)."""
        if not isinstance(getattr(model, "output", None), dict):
            raise ValueError(f"`model` must be a functional model with dict outputs keyed by task. "
                             f"Received: {getattr(model, 'name', model)!r}")
        return cls(inputs=model.input, outputs=model.output, name=name or model.name)

    def compile(self, optimizer="adam", weighting="equal", tasks=None, loss=None, steps_per_execution=1,
                run_eagerly=False, **kwargs):
        """Configures training.

        Args:
            optimizer: a Keras optimizer or its name. Defaults to `"adam"`.
            weighting: a strategy name, config or instance (`mtl_tf.weighting.get`).
                Defaults to `"equal"`.
            tasks: dict of task name -> number of outputs, or a list of
                `mtl_tf.tasks.Task`. Defaults to the tasks `loss` names, else a
                multi-class task per output.
            loss: dict of task name -> `"sparse_categorical_crossentropy"`,
                `"binary_crossentropy"` or `"mse"` (the outputs are logits), instead of
                `tasks`. Per-task weights belong to `weighting` (`"fixed"`), not here.
            steps_per_execution, run_eagerly: as Keras's `compile`.
        """
        unsupported = sorted(set(kwargs) - {"jit_compile", "auto_scale_loss"})
        if unsupported:
            hint = " Fixed task weights: weighting={'class_name': 'fixed', 'config': {'weights': [...]}}." \
                if "loss_weights" in unsupported else ""
            raise ValueError(f"`MultiTaskModel.compile` takes optimizer, weighting, tasks or loss, "
                             f"steps_per_execution and run_eagerly; not {unsupported}.{hint} Each task's "
                             f"loss and metric come from its `Task`.")
        if kwargs.get("jit_compile"):
            raise ValueError("`jit_compile=True` is not supported: the weighting strategies' solvers "
                             "do not compile with XLA here. Received: jit_compile=True")
        if isinstance(self.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy):
            raise ValueError("Keras's `fit` fails under MultiWorkerMirroredStrategy "
                             "(keras-team/keras#20585): train with `training.Trainer`, which runs the same "
                             "step on several workers.")
        tasks = _tasks(self, tasks, loss)
        super().compile(optimizer=optimizer, steps_per_execution=steps_per_execution,
                        run_eagerly=run_eagerly, jit_compile=False)
        names = [t.name for t in tasks]
        unknown = [n for n in names if n not in self.output]
        if unknown:
            raise ValueError(f"`tasks` names tasks the model has no output for: {unknown}. "
                             f"Model outputs: {sorted(self.output)}")
        with self.distribute_strategy.scope():
            strategy = weighting_lib.get(weighting).build(len(tasks))
            parts = prepare_parts(self, names, strategy)
            self.optimizer.build(self.trainable_variables + strategy.trainable)
            self.multi_task_step = MultiTaskStep(self, tasks, strategy, self.optimizer, self.distribute_strategy,
                                                 parts=parts)
            self._totals = _TaskTotals(tasks, isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer),
                                       name="task_totals")
        self.tasks, self.weighting = tuple(tasks), strategy

    @property
    def metrics(self):
        # Keras resets them at every epoch's and every evaluation's start, as its own.
        return [self._totals] if hasattr(self, "_totals") else []

    def train_step(self, data):
        x, y = _unpack(data)
        stats = self.multi_task_step.train(x, self._labels(y, x))
        return self._totals.add(_global(stats, self.distribute_strategy))

    def test_step(self, data):
        x, y = _unpack(data)
        stats = self.multi_task_step.evaluate(x, self._labels(y, x))
        logs = self._totals.add(_global(stats, self.distribute_strategy))
        return {k: v for k, v in logs.items() if not k.startswith("weight_") and k != "skipped_steps"}

    def _labels(self, y, x):
        """`y` as a dict keyed by task, zeros for the tasks whose targets the model computes."""
        batch = tf.shape(tf.nest.flatten(x)[0])[0]
        return task_labels(self.tasks, y, batch, lambda n, dtype: tf.zeros([n], dtype))

    def fit(self, *args, callbacks=None, epochs=1, **kwargs):
        """Keras's `fit`, with the weighting strategy's epoch hooks (its schedules, DWA's
        loss history) called first at every epoch."""
        if not hasattr(self, "multi_task_step"):
            raise RuntimeError("Call `compile(optimizer=..., weighting=...)` before `fit`.")
        self.weighting.check_run_length(epochs)
        callbacks = [_WeightingEpochs(self.weighting), *(callbacks or [])]
        try:
            return super().fit(*args, callbacks=callbacks, epochs=epochs, **kwargs)
        except tf.errors.InvalidArgumentError as error:
            if NON_FINITE not in str(error):
                raise
            task = str(error).split(NON_FINITE, 1)[1].split()[0]
            raise FloatingPointError(f"The loss of task {task} turned NaN or Inf; training stopped before "
                                     f"the optimizer applied that step.") from None

    # === Saving: the strategy in the compile config, its state with the model's variables ====
    def get_compile_config(self):
        config = super().get_compile_config() or {}
        if hasattr(self, "weighting"):
            config.update(weighting={"class_name": self.weighting.name, "config": self.weighting.get_config()},
                          tasks=[t.get_config() for t in self.tasks])
        return config

    def compile_from_config(self, config):
        config = dict(config)
        weighting, tasks = config.pop("weighting", "equal"), config.pop("tasks", None)
        optimizer = keras.optimizers.deserialize(config.pop("optimizer")) if config.get("optimizer") else "adam"
        self.compile(optimizer=optimizer, weighting=weighting, tasks=tasks,
                     steps_per_execution=config.get("steps_per_execution", 1))

    def save_own_variables(self, store):
        super().save_own_variables(store)
        for i, v in enumerate(_state(self)):
            store[f"weighting_{i}"] = v.numpy()

    def load_own_variables(self, store):
        state = _state(self)
        saved = [k for k in store.keys() if k.startswith("weighting_")]
        if len(saved) != len(state):
            raise ValueError(f"The file holds {len(saved)} weighting state variables; this model's "
                             f"{getattr(self, 'weighting', None) and self.weighting.name!r} has {len(state)}. "
                             f"Compile with the weighting it was saved with.")
        for i, v in enumerate(state):
            v.assign(store[f"weighting_{i}"])
        own = {k: store[k] for k in store.keys() if not k.startswith("weighting_")}
        super().load_own_variables(own)


class _TaskTotals(keras.metrics.Metric):
    """An epoch's (or an evaluation's) per-task sums (losses, metrics, labelled counts;
    global under several replicas) and the last training step's weights; its result is
    the Trainer's logs."""

    def __init__(self, tasks, loss_scaled=False, name=None):
        super().__init__(name=name)
        self.tasks, self.loss_scaled = tuple(tasks), loss_scaled
        shape = (len(self.tasks),)
        self.sums = {k: self.add_variable(shape, "zeros", name=k) for k in ("loss_sum", "metric_sum", "count")}
        if loss_scaled:  # steps whose loss-scaled gradients overflowed, skipped
            self.sums["skipped"] = self.add_variable((), "zeros", name="skipped")
        self.last_weights = self.add_variable(shape, "zeros", aggregation="mean", name="weights")

    def add(self, stats):
        for key, variable in self.sums.items():
            if key in stats:
                variable.assign_add(ops.cast(stats[key], variable.dtype))
        if "weights" in stats:
            self.last_weights.assign(ops.cast(stats["weights"], self.last_weights.dtype))
        return self.result()

    def update_state(self, stats):
        self.add(stats)

    def result(self):
        logs = epoch_logs(self.tasks, {k: ops.convert_to_tensor(v) for k, v in self.sums.items()})
        logs.update({f"weight_{t.name}": self.last_weights[i] for i, t in enumerate(self.tasks)})
        if self.loss_scaled:
            logs["skipped_steps"] = ops.convert_to_tensor(self.sums["skipped"])
        return logs

    def reset_state(self):
        for variable in [*self.sums.values(), self.last_weights]:
            variable.assign(ops.zeros_like(variable))


class _WeightingEpochs(keras.callbacks.Callback):
    def __init__(self, weighting):
        super().__init__()
        self.weighting = weighting

    def on_epoch_begin(self, epoch, logs=None):
        self.weighting.on_epoch_begin(epoch)

    def on_epoch_end(self, epoch, logs=None):
        self.weighting.on_epoch_end(epoch)


def _tasks(model, tasks, loss):
    if tasks is not None and loss is not None:
        raise ValueError("Give `tasks` or `loss`, not both: a task's loss comes from its kind.")
    if tasks is not None:
        return as_tasks(tasks)
    if loss is None:
        return infer_tasks(model)
    if not isinstance(loss, dict):
        raise ValueError(f"`loss` must be a dict of task name -> one of {sorted(_LOSS_KINDS)}. "
                         f"Received: loss={loss!r}")
    result = []
    for name, value in loss.items():
        if value not in _LOSS_KINDS:
            raise ValueError(f"`loss[{name!r}]` must be one of {sorted(_LOSS_KINDS)} (or give `tasks`). "
                             f"Received: {value!r}")
        width = int(model.output[name].shape[-1]) if name in model.output else 1
        result.append(Task(name, width, kind=_LOSS_KINDS[value]))
    return tuple(result)


def _unpack(data):
    if isinstance(data, (list, tuple)) and len(data) == 3:
        raise ValueError("Sample weights are not supported: mark a task's unlabelled examples in its "
                         "labels (-1, or NaN for real-valued targets).")
    if not isinstance(data, (list, tuple)) or len(data) != 2:
        raise ValueError("`fit` and `evaluate` need labels: (x, y) with y a dict keyed by task.")
    return data


def _global(stats, strategy):
    """The batch's statistics over every replica (each replica sees the global batch's)."""
    context = tf.distribute.get_replica_context()
    if strategy.num_replicas_in_sync == 1 or context is None:
        return stats
    return {k: context.all_reduce("SUM", v) for k, v in stats.items()}


def _state(model):
    """The weighting strategy's variables (a tf.Module's, in its fixed order)."""
    weighting = getattr(model, "weighting", None)
    return list(weighting.variables) if weighting is not None else []
