"""The Trainer: one compiled tf.GradientTape step for every device layout.

Keras 3's `fit()` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585), so the
loop is ours, kept small and built from Keras's own pieces: `CallbackList` (so
EarlyStopping, CSVLogger, keras-tuner's callbacks work unchanged), `Progbar` through the
CallbackList, and a `History`. The step runs through `strategy.run` inside `tf.function`
on one device, under MirroredStrategy and under MultiWorkerMirroredStrategy alike.

Per step: the per-task masked losses under a tape; then either one backward pass of the
weighting strategy's total loss (loss-level strategies), or per-task gradients at the
shared representation (or at every shared weight) combined by the strategy, sent into
the trunk with `output_gradients`, and the heads' own gradients from the same backward
pass (gradient-level strategies). Models not made of a trunk and heads get one backward
pass per task instead, combined over the variables several tasks share.
"""

import shutil
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from mtl_tf import weighting as weighting_lib
from mtl_tf.gradients import (
    MultiTaskParts,
    flatten,
    last_layer_gradients,
    representation_gradients,
    shared_gradients,
    unflatten,
)
from mtl_tf.tasks import Task, as_tasks
from training.data import as_labels, epoch_dataset


def _infer_tasks(model):
    spec = model.output
    if not isinstance(spec, dict):
        raise ValueError(f"Model {model.name!r} must return a dict of outputs keyed by task "
                         f"name. Received outputs: {spec!r}")
    return tuple(Task(name, int(tensor.shape[-1])) for name, tensor in spec.items())


class Trainer:
    """Trains a multi-task Keras model with a loss-weighting strategy.

    Args:
        model: a functional `keras.Model` with dict outputs keyed by task. Under a
            distribution strategy, build it inside `distribution.scope()`. Gradient-level
            strategies work at the shared representation of a zoo-style model (`trunk`
            and `head_<task>` parts); on any other model they combine the tasks'
            gradients of every variable two or more tasks reach.
        tasks: dict or list of task specs; defaults to multi-class tasks read off the
            model's outputs.
        weighting: a strategy name, config or instance (`mtl_tf.weighting.get`).
            Defaults to `"equal"`.
        optimizer: a Keras optimizer or its name. Defaults to `"adam"`.
        learning_rate: float or None. Overrides the optimizer's. Defaults to `None`.
        distribution: a `tf.distribute.Strategy`. Defaults to the current one.
        run_dir: str or None. Where checkpoints (`checkpoints/`), the CSV history
            (`history.csv`) and TensorBoard logs (`tensorboard/{train,validation}`) go; a
            run_dir with a checkpoint is resumed. Defaults to `None`.
        seed: int. Seeds the per-epoch shuffling of in-memory data. Defaults to `0`.

    Example:
    ```python
    import numpy as np
    import zoo
    from training import Trainer
    model = zoo.build("hard_sharing", tasks={"a": 3, "b": 2}, input_shape=(8,),
                      trunk="dense", units=(16,))
    x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
    y = {"a": (x[:, 0] > 0).astype("int64"), "b": (x[:, 1] > 0).astype("int64")}
    history = Trainer(model, weighting="pcgrad").fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert set(history.history) >= {"loss", "a_loss", "b_accuracy", "weight_a"}
    ```
    """

    def __init__(self, model, tasks=None, weighting="equal", optimizer="adam",
                 learning_rate=None, distribution=None, run_dir=None, seed=0):
        self.model = model
        self.tasks = as_tasks(tasks) if tasks is not None else _infer_tasks(model)
        self.task_names = tuple(t.name for t in self.tasks)
        outputs = model.output if isinstance(model.output, dict) else {}
        unknown = [t for t in self.task_names if t not in outputs]
        if unknown:
            raise ValueError(f"`tasks` names tasks the model has no output for: {unknown}. "
                             f"Model outputs: {sorted(outputs)}")
        self.distribution = distribution or tf.distribute.get_strategy()
        self.run_dir = Path(run_dir) if run_dir else None
        self.seed = int(seed)
        self.parts = MultiTaskParts.find(model, self.task_names)
        with self.distribution.scope():
            self.weighting = weighting_lib.get(weighting).build(len(self.tasks))
            self.optimizer = keras.optimizers.get(optimizer)
            if learning_rate is not None:
                self.optimizer.learning_rate = learning_rate
            self.optimizer.build(model.trainable_variables + self.weighting.trainable)
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        # Keras callbacks (TensorBoard's learning-rate log, ModelCheckpoint) read it here.
        model.optimizer = self.optimizer
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=self.optimizer,
                                              weighting=self.weighting, epoch=self.epoch)
        self._manager = None
        if self.run_dir:
            # Every worker takes part in a save, but only the chief's lands in run_dir;
            # the others write to a scratch folder of their own, removed after each save.
            folder = self.run_dir / "checkpoints"
            if not self._is_chief():
                folder = self.run_dir / f".worker-{self.distribution.cluster_resolver.task_id}"
            self._manager = tf.train.CheckpointManager(self.checkpoint, str(folder), 3)
        # No tensor-dependent Python control flow in the steps: AutoGraph is not needed.
        self._train_function = tf.function(self._distributed(self._train_step), autograph=False)
        self._eval_function = tf.function(self._distributed(self._eval_step), autograph=False)

    # === The compiled steps =================================================================
    def _distributed(self, step):
        def run(batch):
            per_replica = self.distribution.run(step, args=batch)
            return {k: self.distribution.reduce("SUM", v, axis=None) for k, v in per_replica.items()}

        return run

    def _losses(self, y, outputs):
        """Per-task losses, T. Each task's loss is the mean over the labelled examples of
        the global batch, so replicas holding different numbers of labelled examples
        still add up to the one-device loss: the value is the global loss, the gradient
        flows through this replica's share of it. Also returns the losses as a list
        (each depends only on its own task's output, so a gradient of one task's loss
        is None for a variable only other tasks reach), and the local sums and counts."""
        sums, counts = zip(*(t.loss_sum(y[t.name], outputs[t.name]) for t in self.tasks))
        context = tf.distribute.get_replica_context()
        if self.distribution.num_replicas_in_sync == 1 or context is None:
            per_task = [tf.math.divide_no_nan(s, c) for s, c in zip(sums, counts)]
        else:
            global_counts = context.all_reduce("SUM", tf.stack(counts))
            shares = [tf.math.divide_no_nan(s, global_counts[i]) for i, s in enumerate(sums)]
            totals = context.all_reduce("SUM", tf.stop_gradient(tf.stack(shares)))
            per_task = [share + tf.stop_gradient(totals[i] - share) for i, share in enumerate(shares)]
        return tf.stack(per_task), per_task, tf.stack(sums), tf.stack(counts)

    def _stats(self, y, outputs, sums, counts):
        metric = tf.stack([t.metric_sum(y[t.name], outputs[t.name]) for t in self.tasks])
        return {"loss_sum": tf.stop_gradient(sums), "metric_sum": metric, "count": counts}

    def _train_step(self, x, y):
        replicas = self.distribution.num_replicas_in_sync
        mode = self.weighting.grad_mode
        with tf.GradientTape(persistent=mode is not None) as tape:
            if self.parts is not None:
                z, _, copies, outputs = self.parts.forward(x, training=True)
            else:
                outputs = self.model(x, training=True)
            losses, task_losses, sums, counts = self._losses(y, outputs)
            # Everything differentiated is computed here, inside the tape. The optimizer
            # sums gradients over replicas: each replica's share of the losses adds up to
            # the global gradient; terms every replica computes in full are divided.
            summed = tf.reduce_sum(losses)
            regularization = tf.add_n(self.model.losses) / replicas if self.model.losses else 0.0
            if mode is None:
                total = self.weighting.total_loss(losses) + regularization
        self.weighting.observe(losses)
        if mode is None:
            model_variables = self.model.trainable_variables
            variables = model_variables + self.weighting.trainable
            grads = tape.gradient(total, variables)
            grads = grads[: len(model_variables)] + [g / replicas for g in grads[len(model_variables):]]
            weights = self.weighting.loss_weights(losses)
        elif self.parts is None:
            variables, grads, weights = self._parameter_level(tape, task_losses, losses)
            if self.model.losses:
                extra = tape.gradient(regularization, variables)
                grads = [g if e is None else g + e for g, e in zip(grads, extra)]
            del tape
        else:
            shared = self.parts.shared_variables
            heads = [self.parts.heads[t].trainable_variables for t in self.task_names]
            flat_heads = [v for vs in heads for v in vs]
            rep_and_heads = tape.gradient(summed, [copies[t] for t in self.task_names] + flat_heads)
            rep_grads = tf.stack(rep_and_heads[: len(self.tasks)])
            head_grads = rep_and_heads[len(self.tasks):]
            if mode == "representation":
                combined, weights = self.weighting.combine(
                    tf.reshape(rep_grads, [len(self.tasks), -1]), losses)
                shared_grads = tape.gradient(z, shared, output_gradients=tf.reshape(combined, tf.shape(z)))
            else:
                per_task = shared_gradients(tape, z, shared, rep_grads)
                combined, weights = self.weighting.combine(
                    tf.stack([flatten(g) for g in per_task]), losses)
                shared_grads = unflatten(combined, shared)
            if self.weighting.weights_heads:
                scale = [weights[i] for i, vs in enumerate(heads) for _ in vs]
                head_grads = [g * s for g, s in zip(head_grads, scale)]
            variables = shared + flat_heads
            grads = list(shared_grads) + list(head_grads)
            if self.model.losses:
                extra = tape.gradient(regularization, variables)
                grads = [g if e is None else g + e for g, e in zip(grads, extra)]
            del tape
        self.optimizer.apply_gradients(zip(grads, variables))
        stats = self._stats(y, outputs, sums, counts)
        stats["weights"] = tf.cast(weights, tf.float32) / replicas
        return stats

    def _parameter_level(self, tape, task_losses, losses):
        """A gradient-level step for a model without `trunk` and `head_<task>` parts
        (Siamese pipes): each task's gradient of every variable, one backward pass per
        task. Variables more than one task reaches are shared: the strategy combines the
        tasks' gradients of those, flattened. The others belong to one task, and get its
        gradient, scaled by its weight if the strategy weights heads."""
        variables = self.model.trainable_variables
        per_task = [tape.gradient(loss, variables) for loss in task_losses]
        reached = [[g[j] is not None for g in per_task] for j in range(len(variables))]
        shared = [j for j in range(len(variables)) if sum(reached[j]) > 1]
        if not shared:
            raise ValueError(f"Model {self.model.name!r} has no variable that two tasks share, "
                             f"so a gradient-level strategy has nothing to combine.")
        shared_vars = [variables[j] for j in shared]
        stacked = tf.stack([flatten([tf.zeros_like(variables[j]) if g[j] is None else g[j]
                                     for j in shared]) for g in per_task])
        combined, weights = self.weighting.combine(stacked, losses)
        grads = dict(zip(shared, unflatten(combined, shared_vars)))
        for j in range(len(variables)):
            owners = [t for t in range(len(per_task)) if reached[j][t]]
            if j not in grads and owners:
                (t,) = owners
                grads[j] = per_task[t][j] * tf.cast(weights[t], variables[j].dtype) \
                    if self.weighting.weights_heads else per_task[t][j]
        return [variables[j] for j in grads], list(grads.values()), weights

    def _eval_step(self, x, y):
        outputs = self.model(x, training=False)
        _, _, sums, counts = self._losses(y, outputs)
        return self._stats(y, outputs, sums, counts)

    # === Per-task gradients for callbacks (Selective Sharing reads them) ===================
    def task_gradients(self, x, y, kind="representation"):
        """Per-task gradients on one batch, outside training. A callback with a
        `set_trainer(trainer)` method is handed the trainer by `fit`, so it can call this.

        kind: `"representation"` (T x B x D at the shared representation),
        `"last_layer"` ((T x I x D kernel, T x D bias) of the last shared Dense layer), or
        `"shared"` (a list of T lists of gradients, one per shared variable).
        """
        if self.parts is None:
            MultiTaskParts(self.model, self.task_names)
        if kind not in ("representation", "last_layer", "shared"):
            raise ValueError(f"`kind` must be 'representation', 'last_layer' or 'shared'. "
                             f"Received: kind={kind!r}")
        y = as_labels(y, self.task_names)
        with tf.GradientTape(persistent=True) as tape:
            z, h, copies, outputs = self.parts.forward(tf.convert_to_tensor(x), training=False)
            summed = tf.reduce_sum(self._losses(y, outputs)[0])
        rep = representation_gradients(tape, summed, copies, self.task_names)
        if kind == "representation":
            return rep
        if kind == "last_layer":
            if self.parts.last_dense is None:
                raise ValueError("The model's trunk does not end in a Dense layer.")
            return last_layer_gradients(self.parts.last_dense, h, rep)
        return shared_gradients(tape, z, self.parts.shared_variables, rep)

    # === The loop ============================================================================
    def _dataset(self, x, y, batch_size, start_epoch):
        if isinstance(x, tf.data.Dataset):
            steps = int(x.cardinality())
            if steps < 0:
                raise ValueError("A tf.data.Dataset given to `fit` must have a known, finite "
                                 f"number of batches. Received cardinality {steps}.")
            return self._keyed(x).repeat(), steps
        if y is None:
            raise ValueError("`y` is required when `x` is an array.")
        return epoch_dataset(x, as_labels(y, self.task_names), batch_size, self.seed, start_epoch)

    def restore(self):
        """Restores the latest checkpoint of `run_dir`, if any. Returns the epoch reached."""
        latest = tf.train.latest_checkpoint(str(self.run_dir / "checkpoints")) if self.run_dir else None
        if latest:
            self.checkpoint.restore(latest).expect_partial()
        return int(self.epoch.numpy())

    def fit(self, x, y=None, epochs=1, batch_size=128, validation_data=None, callbacks=None,
            verbose=1):
        """Trains for `epochs` epochs (resuming `run_dir`'s checkpoint) and returns the
        History. `x, y`: arrays (labels a dict keyed by task) or a finite `tf.data.Dataset`
        of (x, y) batches as `x`. `validation_data`: `(x, y)` or a dataset."""
        if not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"`epochs` must be a positive integer. Received: epochs={epochs!r}")
        start = self.restore()
        dataset, steps = self._dataset(x, y, batch_size, start)
        iterator = iter(self.distribution.experimental_distribute_dataset(dataset))
        callbacks = list(callbacks or [])
        for callback in callbacks:
            # Callbacks that read per-task gradients (Selective Sharing) get the trainer.
            if hasattr(callback, "set_trainer"):
                callback.set_trainer(self)
        if self.run_dir and self._is_chief():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            callbacks.append(keras.callbacks.CSVLogger(str(self.run_dir / "history.csv"),
                                                       append=start > 0))
        history = keras.callbacks.History()
        callbacks.append(history)
        callback_list = keras.callbacks.CallbackList(
            callbacks, add_history=False, add_progbar=verbose > 0, model=self.model,
            verbose=verbose, epochs=epochs, steps=steps)
        writers = self._summary_writers()
        self.model.stop_training = False
        callback_list.on_train_begin()
        logs = {}
        for epoch in range(start, epochs):
            self.weighting.on_epoch_begin(epoch)
            callback_list.on_epoch_begin(epoch)
            totals = None
            for step in range(steps):
                callback_list.on_train_batch_begin(step)
                stats = self._train_function(next(iterator))
                weights = stats.pop("weights").numpy()
                totals = _accumulate(totals, stats)
                logs = self._logs(totals)
                logs.update({f"weight_{t}": float(w) for t, w in zip(self.task_names, weights)})
                callback_list.on_train_batch_end(step, logs)
            self.weighting.on_epoch_end(epoch)
            if validation_data is not None:
                logs.update({f"val_{k}": v for k, v in self.evaluate(validation_data, batch_size).items()})
            self.epoch.assign(epoch + 1)
            if self._manager:
                self._manager.save(checkpoint_number=epoch + 1)
                if not self._is_chief():
                    shutil.rmtree(self._manager.directory, ignore_errors=True)
            self._write_summaries(writers, logs, epoch)
            callback_list.on_epoch_end(epoch, logs)
            if self.model.stop_training:
                break
        callback_list.on_train_end(logs)
        return history

    def evaluate(self, data, batch_size=256):
        """Per-task loss and metric over `data` ((x, y) or a finite dataset)."""
        if not isinstance(data, tf.data.Dataset):
            data = tf.data.Dataset.from_tensor_slices(tuple(data)).batch(batch_size)
        totals = None
        for batch in self.distribution.experimental_distribute_dataset(self._keyed(data)):
            totals = _accumulate(totals, self._eval_function(batch))
        return self._logs(totals)

    def _keyed(self, dataset):
        """`dataset` with its labels as a dict keyed by task."""
        return dataset.map(lambda x, y: (x, as_labels(y, self.task_names)))

    def _logs(self, totals):
        counts = np.maximum(totals["count"], 1.0)
        logs = {}
        for i, task in enumerate(self.tasks):
            logs[f"{task.name}_loss"] = float(totals["loss_sum"][i] / counts[i])
            logs[f"{task.name}_{task.metric}"] = float(totals["metric_sum"][i] / counts[i])
        logs["loss"] = float(sum(logs[f"{t}_loss"] for t in self.task_names))
        return logs

    def _summary_writers(self):
        if not self.run_dir or not self._is_chief():
            return None
        return {side: tf.summary.create_file_writer(str(self.run_dir / "tensorboard" / side))
                for side in ("train", "validation")}

    def _write_summaries(self, writers, logs, epoch):
        if writers is None:
            return
        for side, writer in writers.items():
            with writer.as_default():
                for key, value in logs.items():
                    if (side == "validation") == key.startswith("val_"):
                        tf.summary.scalar(key.removeprefix("val_"), value, step=epoch)
            writer.flush()

    def _is_chief(self):
        resolver = getattr(self.distribution, "cluster_resolver", None)
        return resolver is None or resolver.task_type in (None, "chief") or (
            resolver.task_type == "worker" and resolver.task_id == 0)


def _accumulate(totals, stats):
    """Adds a step's summed statistics (tensors) into the running totals (NumPy)."""
    stats = {k: v.numpy() for k, v in stats.items()}
    return stats if totals is None else {k: totals[k] + stats[k] for k in stats}


def fit(model, x, y=None, weighting="equal", epochs=1, run_dir=None, **kwargs):
    """`Trainer(model, weighting=..., run_dir=...).fit(x, y, epochs=...)` in one call.
    Keyword arguments go to the Trainer or to `fit`, whichever takes them."""
    trainer_keys = {"tasks", "optimizer", "learning_rate", "distribution", "seed"}
    trainer = Trainer(model, weighting=weighting, run_dir=run_dir,
                      **{k: v for k, v in kwargs.items() if k in trainer_keys})
    return trainer.fit(x, y, epochs=epochs, **{k: v for k, v in kwargs.items() if k not in trainer_keys})
