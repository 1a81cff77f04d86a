"""The Trainer: the compiled loop around one tf.GradientTape step (`mtl_tf.step`) for
every device layout.

Keras 3's `fit()` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585), so the
loop is ours, kept small and built from Keras's own pieces: `CallbackList` (so
EarlyStopping, CSVLogger, keras-tuner's callbacks work unchanged), `Progbar` through the
CallbackList, and a `History`. The step runs through `strategy.run` inside `tf.function`
on one device, under MirroredStrategy and under MultiWorkerMirroredStrategy alike.

The step itself (`mtl_tf.step.MultiTaskStep`) is what a Keras model's `train_step`
runs too; the Trainer adds the data, the epochs, the checkpoints and the callbacks.
"""

import csv
import io
import json
import shutil
import sys
import time
import warnings
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from mtl_tf import weighting as weighting_lib
from mtl_tf.data.paths import atomic_write_bytes
from mtl_tf.errors import brief
from mtl_tf.gradients import last_layer_gradients, representation_gradients, shared_gradients
from mtl_tf.graph_cut import find_parts
from mtl_tf.inspection import Inspection, is_entry
from mtl_tf.step import NON_FINITE, MultiTaskStep, epoch_logs, find_model_parts, prepare_parts
from mtl_tf.tasks import as_labels, as_tasks, infer_tasks, task_labels
from training.data import check_arrays, epoch_dataset




def _first_inputs(x, count=256):
    """Up to `count` inputs: the first of the arrays, or of the dataset's first batch."""
    if isinstance(x, tf.data.Dataset):
        element = next(iter(x.take(1)))
        x = element[0] if isinstance(element, (tuple, list)) else element
    return tf.nest.map_structure(lambda a: a[:count], x)


class Trainer:
    """Trains a multi-task Keras model with a loss-weighting strategy.

    Args:
        model: a functional `keras.Model` with dict outputs keyed by task. Under a
            distribution strategy, build it inside `distribution.scope()`. Gradient-level
            strategies work at the shared representation: a zoo-style model's `trunk`
            output, or on any other model the cut of its graph between the layers two
            or more tasks depend on and each task's own (`mtl_tf.graph_cut`); where no
            cut exists (one layer's weights on several tasks' own paths) they combine
            the tasks' gradients of every variable two or more tasks reach.
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
        shuffle: bool. Shuffle in-memory data every epoch; `False` takes the batches in
            the arrays' order every epoch (paper 003's authors did). Defaults to `True`.
        update: `"joint"` (one step on the weighted sum of the losses) or `"alternating"`
            (paper 001's Algorithm 1: per batch, one step per group of `groups` in turn, on
            that group's weighted losses). Defaults to `"joint"`.
        groups: list of lists of task names, for `update="alternating"`, e.g.
            `[["reconstruction_1"], ["classes"]]`.
        steps_per_execution: int. Training steps per compiled call, run in a graph loop
            (callbacks see one batch per call). Defaults to `1`.
        checkpoint_every: int. With `run_dir`, checkpoint every this many epochs and at the
            last epoch of `fit` (a resumed run redoes the epochs since). For runs of many
            tiny epochs (paper 001: 5000 epochs of a few steps). Defaults to `1`.

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
                 learning_rate=None, distribution=None, run_dir=None, seed=0, shuffle=True,
                 update="joint", groups=None, steps_per_execution=1, checkpoint_every=1):
        self.model = model
        self.tasks = as_tasks(tasks) if tasks is not None else infer_tasks(model)
        self.task_names = tuple(t.name for t in self.tasks)
        outputs = model.output if isinstance(model.output, dict) else {}
        unknown = [t for t in self.task_names if t not in outputs]
        if unknown:
            raise ValueError(f"`tasks` names tasks the model has no output for: {unknown}. "
                             f"Model outputs: {sorted(outputs)}")
        if learning_rate is not None and (isinstance(learning_rate, bool) or not isinstance(
                learning_rate, (int, float)) or not 0 < learning_rate < float("inf")):
            raise ValueError(f"`learning_rate` must be a positive number. Received: "
                             f"learning_rate={learning_rate!r}")
        self.distribution = distribution or tf.distribute.get_strategy()
        self.run_dir = Path(run_dir) if run_dir else None
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        _check_positive_int("steps_per_execution", steps_per_execution)
        self.steps_per_execution = int(steps_per_execution)
        _check_positive_int("checkpoint_every", checkpoint_every)
        self.checkpoint_every = int(checkpoint_every)
        self.update, self.groups = _check_update(update, groups, self.task_names)
        with self.distribution.scope():
            self.weighting = weighting_lib.get(weighting).build(len(self.tasks))
            parts = prepare_parts(model, self.task_names, self.weighting)
            if self.update == "alternating" and (self.weighting.grad_mode is not None
                                                 or self.weighting.needs_losses_after_step):
                raise ValueError(f"The alternating update takes a loss-level weighting (a schedule, "
                                 f"fixed, uncertainty...). Received: weighting={self.weighting.name!r}")
            self.optimizer = keras.optimizers.get(optimizer)
            if learning_rate is not None:
                self.optimizer.learning_rate = learning_rate
            self.optimizer.build(model.trainable_variables + self.weighting.trainable)
            self.step = MultiTaskStep(model, self.tasks, self.weighting, self.optimizer, self.distribution,
                                      self.update, self.groups, parts)
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
            self._train_totals = _RunningTotals(len(self.tasks))
            self._eval_totals = _RunningTotals(len(self.tasks))
        self._callback_list = None
        self._restore_hooks = []
        self._restored = False  # run_dir was read (by `restore` or the first `fit`)
        self._resumed = False  # a checkpoint was restored and no epoch trained since
        self._attach()

    def _attach(self):
        """(Re)builds what depends on the model and optimizer: the checkpoint and the
        compiled steps."""
        # Keras callbacks (TensorBoard's learning-rate log, ModelCheckpoint) read it here.
        self.model.optimizer = self.optimizer
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer,
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
        # The training function takes the iterator, whose batch axis is unknown, so the
        # partial last batch does not trace it again; statistics stay in the graph.
        self._train_function = tf.function(self._on_iterator(self.step.train, self._train_totals),
                                           autograph=False)
        self._eval_function = tf.function(self._on_batch(self.step.evaluate, self._eval_totals),
                                          autograph=False, reduce_retracing=True)

    def replace_model(self, model, carry=()):
        """Continues this run with `model` in place of the current model (Selective
        Sharing's merges rebuild it with fewer branches).

        `carry` pairs (new variable, old variable): each new variable takes the old one's
        value and its optimizer state (momentum, Adam's moments). The optimizer is
        rebuilt for the new model's variables with the same configuration and step
        count; the weighting strategy and its state are kept. Build `model` inside
        `trainer.distribution.scope()`.
        """
        carry = list(carry)
        for new, old in carry:
            if tuple(new.shape) != tuple(old.shape):
                raise ValueError(f"`carry` pairs variables of different shapes: {new.path} "
                                 f"{tuple(new.shape)} and {old.path} {tuple(old.shape)}.")
        parts = find_model_parts(model, self.task_names, self.weighting)
        old = self.optimizer
        with self.distribution.scope():
            optimizer = old.__class__.from_config(old.get_config())
            optimizer.build(model.trainable_variables + self.weighting.trainable)
            optimizer.iterations.assign(old.iterations)
            for new_variable, old_variable in carry:
                new_variable.assign(old_variable)
            _copy_slots(old, optimizer, carry + [(w, w) for w in self.weighting.trainable])
        model.stop_training = getattr(self.model, "stop_training", False)
        self.model, self.optimizer = model, optimizer
        self.step.set_model(model, parts, optimizer)
        if self._callback_list is not None:  # the callbacks after the one that called this
            self._callback_list.set_model(model)
        if self._capture is not None:
            self._capture = _BranchCapture(self, self._capture.tap_all)
        self._attach()

    @property
    def parts(self):
        """Where the step taps per-task gradients (`trunk` and `head_<task>` parts, the
        graph cut, or None)."""
        return self.step.parts

    @property
    def _capture(self):
        return self.step.capture

    @_capture.setter
    def _capture(self, capture):
        self.step.capture = capture

    def add_restore_hook(self, hook):
        """Calls `hook(epoch)` before a checkpoint of `epoch` finished epochs is restored,
        so a callback that changes the model's structure while training (Selective
        Sharing) can rebuild the model that checkpoint was written from."""
        if hook not in self._restore_hooks:
            self._restore_hooks.append(hook)

    # === Branch-point gradients (Selective Sharing) =========================================
    def capture_branch_gradients(self, enabled=True, tap_all=False):
        """Sums, over the training steps from now on, every task's own gradient of the
        kernel of its branch point (the first Dense layer on its path), out of the
        training step's own backward pass: a task with a branch of its own reads its
        layer's gradient; tasks sharing a branch each get theirs from their own
        pre-activation (one matmul). Read the sums with `captured_branch_gradients`.

        Args:
            enabled: bool. Start (True) or stop (False) capturing.
            tap_all: bool. Compute every task's gradient from its pre-activation, even on
                a branch of its own (for checking the shortcut). Defaults to `False`.
        """
        if enabled and self.update != "joint":
            raise ValueError("Branch-point gradients are captured from the joint update's backward pass.")
        self._capture = _BranchCapture(self, tap_all) if enabled else None
        self._attach()

    def captured_branch_gradients(self, reset=True):
        """The sums of `capture_branch_gradients` so far, T x I x D (tasks in order), as
        NumPy; `reset` starts new sums."""
        if self._capture is None:
            raise ValueError("Branch-point gradients are not being captured: call "
                             "`capture_branch_gradients()` first.")
        value = self._capture.total.numpy()
        if reset:
            self._capture.total.assign(tf.zeros_like(self._capture.total))
        return value

    # === The compiled steps =================================================================
    def _on_batch(self, step, totals):
        def run(batch):
            per_replica = self.distribution.run(step, args=batch)
            reduced = {k: self.distribution.reduce("SUM", v, axis=None) for k, v in per_replica.items()}
            if "captured" in reduced:
                self._capture.total.assign_add(reduced.pop("captured"))
            totals.add(reduced)

        return run

    def _on_iterator(self, step, totals):
        """`steps` steps per call (`steps_per_execution`), in one graph loop: a small
        model is then not bound by Python's per-step overhead."""
        run = self._on_batch(step, totals)
        if self.steps_per_execution == 1:
            return lambda iterator, steps: run(next(iterator))

        def many(iterator, steps):
            def body(i):
                run(next(iterator))
                return (i + 1,)

            tf.while_loop(lambda i: i < steps, body, (tf.constant(0),), parallel_iterations=1)

        return many

    # === Per-task gradients for callbacks (Selective Sharing reads them) ===================
    def task_gradients(self, x, y, kind="representation"):
        """Per-task gradients on one batch, outside training. A callback with a
        `set_trainer(trainer)` method is handed the trainer by `fit`, so it can call this.

        kind: `"representation"` (T x B x D at the shared representation),
        `"last_layer"` ((T x I x D kernel, T x D bias) of the last shared Dense layer), or
        `"shared"` (a list of T lists of gradients, one per shared variable).
        """
        parts = self.parts or find_parts(self.model, self.task_names)
        if parts is None:
            raise ValueError(f"Model {self.model.name!r} has no cut between shared and task layers "
                             f"(a layer's weights serve several tasks' own paths): no per-task "
                             f"gradients at a shared representation.")
        if kind not in ("representation", "last_layer", "shared"):
            raise ValueError(f"`kind` must be 'representation', 'last_layer' or 'shared'. "
                             f"Received: kind={kind!r}")
        y = as_labels(y, self.task_names)
        with tf.GradientTape(persistent=True) as tape:
            z, h, copies, outputs, _ = parts.forward(tf.convert_to_tensor(x), training=False)
            summed = tf.reduce_sum(self.step.losses(y, outputs)[0])
        rep = representation_gradients(tape, summed, copies, self.task_names)
        if kind == "representation":
            return rep
        if kind == "last_layer":
            if parts.last_dense is None:
                raise ValueError("The model's shared part does not end in one Dense layer.")
            return last_layer_gradients(parts.last_dense, h, rep)
        return shared_gradients(tape, z, parts.shared_variables, rep)

    # === The loop ============================================================================
    def _dataset(self, x, y, batch_size, start_epoch, steps_per_epoch=None):
        """(an endless dataset of batches, steps per epoch). With `steps_per_epoch`, an
        epoch is that many batches of the stream, which runs on across epochs (Keras's
        `fit` does the same), and a resumed run starts where epoch `start_epoch` starts."""
        if isinstance(x, tf.data.Dataset):
            steps = int(x.cardinality())
            if steps < 0 and steps_per_epoch is None:
                raise ValueError("A tf.data.Dataset given to `fit` must have a known, finite "
                                 f"number of batches, or `steps_per_epoch`. Received cardinality {steps}.")
            return self._keyed(x).repeat(), steps_per_epoch or steps
        if y is None:
            raise ValueError("`y` is required when `x` is an array.")
        y = self._labels(y, len(x))
        check_arrays(x, y, self.tasks, self.model.input_shape)
        if steps_per_epoch is None:
            return epoch_dataset(x, y, batch_size, self.seed, start_epoch, shuffle=self.shuffle)
        dataset, _ = epoch_dataset(x, y, batch_size, self.seed, shuffle=self.shuffle,
                                   skip=start_epoch * steps_per_epoch)
        return dataset, steps_per_epoch

    # === Checkpoints ===========================================================================
    def _spec(self):
        """What a checkpoint of this run must have been written with to be resumed."""
        spec = {"tasks": [t.get_config() for t in self.tasks],
                "weighting": {"class_name": self.weighting.name, "config": self.weighting.get_config()}}
        if self.update != "joint":
            spec["update"] = {"update": self.update, "groups": [
                [t for t, m in zip(self.task_names, mask.numpy()) if m] for mask in self.groups]}
        return spec

    def _check_spec(self):
        """Refuses a run_dir whose checkpoints were written by another task set or
        weighting strategy (or another schedule), naming what differs."""
        path = self.run_dir / SPEC_FILE
        if not path.is_file():
            return
        there, here = json.loads(path.read_text()), json.loads(json.dumps(self._spec()))
        changed = {k: (there.get(k), v) for k, v in here.items() if there.get(k) != v}
        if changed:
            raise ValueError(f"`run_dir` {str(self.run_dir)!r} holds a run with other settings "
                             f"(there, here): {changed}. Use a new run_dir, or the same settings "
                             f"to resume it.")

    def restore(self):
        """Restores the latest readable checkpoint of `run_dir`, if any, and returns the
        epoch reached (0 without one). A checkpoint that cannot be read (truncated,
        corrupted) is reported and the one before it is used."""
        self._restored = True
        if not self.run_dir:
            return int(self.epoch.numpy())
        self._check_spec()
        folder = self.run_dir / "checkpoints"
        state = tf.train.get_checkpoint_state(str(folder))
        candidates = list(state.all_model_checkpoint_paths)[::-1] if state else []
        for path in candidates:
            try:
                for hook in self._restore_hooks:
                    hook(int(Path(path).name.rsplit("-", 1)[1]))
                self.checkpoint.restore(path).expect_partial()
            except (tf.errors.OpError, ValueError, IndexError, OSError) as error:
                warnings.warn(f"Checkpoint {path!r} cannot be read ({brief(error)}); trying the "
                              f"one before it.",
                              stacklevel=2)
                continue
            self._resumed = True
            break
        else:
            if candidates:
                raise ValueError(f"No checkpoint of `run_dir` {str(self.run_dir)!r} can be read: "
                                 f"{candidates}. Move the folder aside to start afresh.")
        return int(self.epoch.numpy())

    def _save(self, epoch, write=True):
        """Counts the finished epoch `epoch` (0-based) and, if `write`, checkpoints it. A
        failed write (a full disk) leaves the earlier checkpoints as they were, and says so."""
        self.epoch.assign(epoch + 1)
        if not self._manager or not write:
            return
        try:
            self._manager.save(checkpoint_number=epoch + 1)
        except (tf.errors.OpError, OSError) as error:
            for partial in Path(self._manager.directory).glob(f"ckpt-{epoch + 1}_temp*"):
                shutil.rmtree(partial, ignore_errors=True)  # frees what the failed write took
            kept = self._manager.latest_checkpoint
            raise RuntimeError(f"Writing the checkpoint of epoch {epoch + 1} failed ({brief(error)}). "
                               f"The earlier checkpoints are untouched; the run resumes from "
                               f"{kept or 'the start'}.") from error
        finally:
            if not self._is_chief():
                shutil.rmtree(self._manager.directory, ignore_errors=True)

    # === The loop ============================================================================
    def fit(self, x, y=None, epochs=1, batch_size=128, validation_data=None, callbacks=None,
            verbose="auto", initial_epoch=None, steps_per_epoch=None):
        """Trains and returns a Keras `History` of the epochs trained by this call.

        Which epochs (0-based, as Keras numbers them):
        - by default, `epochs` more epochs, numbered on from the trainer's epoch count (so
          a second call continues the weighting schedules where the first stopped);
        - when `run_dir` holds a checkpoint (a run started again), it is restored and
          `epochs` is the epoch to reach: the run resumes and stops there, as if never
          interrupted;
        - with `initial_epoch` (keras-tuner's Hyperband passes it), epochs
          `initial_epoch` to `epochs - 1`, as Keras's `fit`.

        Each epoch: the training steps, the validation, the callbacks (the CSV history
        last), then the TensorBoard summaries and the checkpoint, so a checkpoint always
        stands for a complete epoch with its history row and whatever the callbacks
        changed (a learning rate). A loss that turns NaN or Inf stops the run with an
        error naming the task and the step; the checkpoints are left as they were.

        Args:
            x, y: arrays (labels a dict keyed by task; a bare array for one task), or a
                finite `tf.data.Dataset` of `(x, y)` batches as `x`.
            epochs: int. See above. Defaults to `1`.
            batch_size: int. For arrays. Defaults to `128`.
            validation_data: `(x, y)` or a finite dataset; logged with the `val_` prefix.
            callbacks: Keras callbacks; one with `set_trainer(trainer)` is handed this trainer.
            verbose: 0 (silent), 1 (a progress bar), 2 (one line per epoch) or `"auto"`:
                1 on a terminal, 2 when the output is piped to a file. Defaults to `"auto"`.
            initial_epoch: int or None. See above. Defaults to `None`.
            steps_per_epoch: int or None. Batches per epoch; the batches run on across
                epochs, so with arrays an epoch of fewer steps than the data is the next
                part of the shuffled passes. Defaults to `None`: one pass over the arrays,
                or the dataset's batches.
        """
        _check_positive_int("epochs", epochs)
        _check_positive_int("batch_size", batch_size)
        if steps_per_epoch is not None:
            _check_positive_int("steps_per_epoch", steps_per_epoch)
        if initial_epoch is not None and (not _is_int(initial_epoch) or not 0 <= initial_epoch < epochs):
            raise ValueError(f"`initial_epoch` must be an integer in [0, epochs={epochs}). "
                             f"Received: initial_epoch={initial_epoch!r}")
        if verbose == "auto":
            verbose = 1 if sys.stdout.isatty() else 2
        if verbose not in (0, 1, 2):
            raise ValueError(f"`verbose` must be 0, 1, 2 or 'auto'. Received: verbose={verbose!r}")
        callbacks = list(callbacks or [])
        for callback in callbacks:
            # Callbacks that read per-task gradients or rebuild the model (Selective
            # Sharing) get the trainer, before a checkpoint is restored.
            if hasattr(callback, "set_trainer"):
                callback.set_trainer(self)
        if not self._restored:
            self.restore()
        if initial_epoch is not None:
            start, end = initial_epoch, epochs
            self.epoch.assign(start)
        elif self._resumed:
            start, end = int(self.epoch.numpy()), epochs
        else:
            start = int(self.epoch.numpy())
            end = start + epochs
        self.weighting.check_run_length(end)
        dataset, steps = self._dataset(x, y, batch_size, start, steps_per_epoch)
        iterator = iter(self.distribution.experimental_distribute_dataset(dataset))
        if self.run_dir and self._is_chief():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if not (self.run_dir / SPEC_FILE).exists():
                atomic_write_bytes(self.run_dir / SPEC_FILE, json.dumps(self._spec(), indent=2).encode())
            history_csv = self.run_dir / "history.csv"
            _trim_history(history_csv, start)
            callbacks.append(_HistoryCSV(str(history_csv), append=start > 0))
        try:
            return self._loop(callbacks, start, end, steps, iterator, validation_data, batch_size,
                              verbose, x)
        finally:
            self._callback_list = None
            for callback in callbacks:  # on an error, on_train_end (which closes it) never ran
                if isinstance(callback, keras.callbacks.CSVLogger) and callback.csv_file:
                    callback.csv_file.close()

    def _loop(self, callbacks, start, end, steps, iterator, validation_data, batch_size, verbose, x):
        history, final = keras.callbacks.History(), _FinalLogs()
        callbacks += [history, final] + ([_Progbar()] if verbose > 0 else [])
        callback_list = keras.callbacks.CallbackList(
            callbacks, add_history=False, add_progbar=False, model=self.model,
            verbose=verbose, epochs=end, steps=steps)
        self._callback_list = callback_list  # `replace_model` hands the callbacks the new model
        writers = self._summary_writers()
        self.model.stop_training = False
        callback_list.on_train_begin()
        logs, inspection, sample = {}, None, None
        for epoch in range(start, end):
            self.weighting.on_epoch_begin(epoch)
            callback_list.on_epoch_begin(epoch)
            self._train_totals.reset()
            shown = -float("inf")
            for first in range(0, steps, self.steps_per_execution):
                count = min(self.steps_per_execution, steps - first)
                step = first + count - 1  # Keras numbers a chunk of steps by its last
                callback_list.on_train_batch_begin(step)
                try:
                    self._train_function(iterator, tf.constant(count))
                except tf.errors.InvalidArgumentError as error:
                    if NON_FINITE not in str(error):
                        raise
                    task = str(error).split(NON_FINITE, 1)[1].split()[0]
                    where = f"step {first + 1}" if count == 1 else f"steps {first + 1}-{step + 1}"
                    raise FloatingPointError(
                        f"The loss of task {task} is NaN or Inf at epoch {epoch + 1}, {where} of "
                        f"{steps}; training stopped before the optimizer applied that step. "
                        f"Checkpoints in run_dir are those of the finished epochs."
                    ) from None
                # Reading the statistics waits for the device: only when they are shown.
                if step == steps - 1 or time.monotonic() - shown >= REFRESH_SECONDS:
                    logs, shown = self._train_logs(), time.monotonic()
                callback_list.on_train_batch_end(step, logs)
            self.weighting.on_epoch_end(epoch)
            if validation_data is not None:
                logs.update({f"val_{k}": v for k, v in self.evaluate(validation_data, batch_size).items()})
            if inspection is None or inspection.model is not self.model:  # Selective Sharing rebuilds it
                inspection = Inspection(self.model, self.task_names)
            if inspection.active:  # on the same inputs every epoch
                sample = _first_inputs(x) if sample is None else sample
                logs.update(inspection.logs(sample))
            self._resumed = False
            callback_list.on_epoch_end(epoch, logs)
            logs = final.logs  # with what the callbacks added (CallbackList copies the dict)
            self._write_summaries(writers, logs, epoch)
            self._save(epoch, write=(epoch + 1) % self.checkpoint_every == 0 or epoch + 1 == end
                       or self.model.stop_training)
            if self.model.stop_training:
                break
        callback_list.on_train_end(logs)
        return history

    def _train_logs(self):
        totals = self._train_totals.read()
        logs = self._logs(totals)
        logs.update({f"weight_{t}": float(w) for t, w in zip(self.task_names, totals["weights"])})
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            # Steps whose loss-scaled gradients overflowed: skipped, and the scale halved.
            logs["skipped_steps"] = float(totals["skipped"])
        return logs

    def evaluate(self, data, batch_size=256):
        """Per-task loss and metric over `data` ((x, y) or a finite dataset)."""
        _check_positive_int("batch_size", batch_size)
        if not isinstance(data, tf.data.Dataset):
            if not isinstance(data, (tuple, list)) or len(data) != 2:
                raise ValueError(f"`data` must be (x, y) or a tf.data.Dataset. Received: "
                                 f"{type(data).__name__}")
            x, y = data
            y = self._labels(y, len(x))
            check_arrays(x, y, self.tasks, self.model.input_shape, argument="data")
            data = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
        self._eval_totals.reset()
        for batch in self.distribution.experimental_distribute_dataset(self._keyed(data)):
            self._eval_function(batch)
        return self._logs(self._eval_totals.read())

    def _keyed(self, dataset):
        """`dataset` with its labels as a dict keyed by task."""
        return dataset.map(lambda x, y: (x, self._labels(y, tf.shape(x)[0], tf.zeros)))

    def _labels(self, y, n, zeros=np.zeros):
        """`y` as a dict keyed by task, with zeros for the tasks whose targets the model
        computes (`target="output"`) when not given. A bare array is the labels of the one
        task that reads labels."""
        return task_labels(self.tasks, y, n, zeros)

    def _logs(self, totals):
        return {k: float(v) for k, v in epoch_logs(self.tasks, totals).items()}

    def metric_names(self, validation=True):
        """The names `fit` logs per epoch (with `val_` ones when `validation`)."""
        return metric_names(self.tasks, validation)

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


SPEC_FILE = "trainer.json"
# How often the progress bar and batch-level callbacks get fresh statistics.
REFRESH_SECONDS = 0.5


class _FinalLogs(keras.callbacks.Callback):
    """Last in the list: the epoch's logs as the callbacks before it left them."""

    logs = None

    def on_epoch_end(self, epoch, logs=None):
        self.logs = dict(logs or {})


class _Progbar(keras.callbacks.ProgbarLogger):
    """Keras's progress bar without the gate and cross-stitch entries (dozens of them on
    a mixture of experts), which the history, CSV and TensorBoard keep."""

    def _update_progbar(self, batch, logs=None):
        super()._update_progbar(batch, {k: v for k, v in (logs or {}).items() if not is_entry(k)})

    def _finalize_progbar(self, logs):
        super()._finalize_progbar({k: v for k, v in (logs or {}).items() if not is_entry(k)})


class _RunningTotals:
    """Per-task sums of an epoch (losses, metrics, labelled counts) kept in variables the
    compiled step adds to, so the host reads them only when it shows them; and the last
    step's loss weights."""

    SUMS = ("loss_sum", "metric_sum", "count", "skipped")

    def __init__(self, num_tasks):
        self.values = {k: tf.Variable(tf.zeros([] if k == "skipped" else [num_tasks]), trainable=False, name=k)
                       for k in (*self.SUMS, "weights")}

    def add(self, stats):
        for key, value in stats.items():
            if key in self.SUMS:
                self.values[key].assign_add(value)
            else:
                self.values[key].assign(value)

    def reset(self):
        for value in self.values.values():
            value.assign(tf.zeros_like(value))

    def read(self):
        return {k: v.numpy() for k, v in self.values.items()}


class _BranchCapture:
    """What `Trainer.capture_branch_gradients` needs in the step: which tasks' branch
    points are tapped (those a branch shares, or all), where the others' kernels are
    among the gradients, and the running sums (T x I x D)."""

    def __init__(self, trainer, tap_all):
        parts = trainer.parts
        if parts is None:
            raise ValueError(f"Model {trainer.model.name!r} has no `trunk` and `head_<task>` "
                             f"parts, so its branch points cannot be found.")
        points = {t: parts.branch_point(t) for t in trainer.task_names}
        missing = [t for t, p in points.items() if p is None]
        if missing:
            raise ValueError(f"Tasks {missing} have no Dense layer between the trunk and their "
                             f"output: no branch point to capture gradients at.")
        shapes = {t: tuple(p.kernel.shape) for t, p in points.items()}
        if len(set(shapes.values())) > 1:
            raise ValueError(f"The tasks' branch points differ in shape, so their gradients "
                             f"cannot be compared: {shapes}.")
        users = {}
        for p in points.values():
            users[id(p)] = users.get(id(p), 0) + 1
        self.tap_all = tap_all
        # Regularisation reaches the kernels, not the pre-activations: tap everything.
        tap_all = tap_all or bool(trainer.model.losses)
        self.task_names = trainer.task_names
        self.points = points
        self.tapped = tuple(t for t in self.task_names if tap_all or users[id(points[t])] > 1)
        with trainer.distribution.scope():
            self.total = tf.Variable(tf.zeros([len(points), *next(iter(shapes.values()))]),
                                     trainable=False, name="captured_branch_gradients")

    def pre(self, taps):
        return [taps[t][1] for t in self.tapped]

    def kernels(self, variables, grads, taps, tap_grads, scale):
        """Each task's kernel gradient, T x I x D: its own branch's from `grads` (the
        gradients of `variables`), a shared branch's from its tapped pre-activation,
        both divided by `scale[t]` (the task's weight in the differentiated loss)."""
        index = {id(v): i for i, v in enumerate(variables)}
        tapped = dict(zip(self.tapped, tap_grads))
        result = []
        for i, t in enumerate(self.task_names):
            if t in tapped:
                layer_input, _ = taps[t]
                g = tf.matmul(layer_input, tapped[t], transpose_a=True)
            else:
                g = grads[index[id(self.points[t].kernel)]]
            result.append(tf.math.divide_no_nan(g, tf.cast(scale[i], g.dtype)))
        return tf.stack(result)


def _check_update(update, groups, task_names):
    """(update, group masks): `"joint"` (one step on the weighted sum of the losses, Eq. 4
    of paper 001) needs no groups; `"alternating"` takes every task in exactly one group
    and steps on each group in turn (Algorithm 1)."""
    if update not in ("joint", "alternating"):
        raise ValueError(f"`update` must be 'joint' or 'alternating'. Received: update={update!r}")
    if update == "joint":
        if groups is not None:
            raise ValueError("`groups` belong to the alternating update: pass update='alternating'.")
        return update, None
    if not isinstance(groups, (list, tuple)) or not groups or not all(
            isinstance(g, (list, tuple)) and g for g in groups):
        raise ValueError(f"The alternating update needs `groups`: a list of lists of task names, "
                         f"stepped on in order. Received: groups={groups!r}")
    named = [t for g in groups for t in g]
    unknown = sorted(set(named) - set(task_names))
    missing = [t for t in task_names if t not in named]
    twice = sorted({t for t in named if named.count(t) > 1})
    if unknown or missing or twice:
        raise ValueError(f"`groups` must name every task exactly once. Unknown: {unknown}; missing: "
                         f"{missing}; twice: {twice}. Tasks: {list(task_names)}")
    return update, [tf.constant([1.0 if t in g else 0.0 for t in task_names]) for g in groups]


def _copy_slots(old, new, pairs):
    """Copies the optimizer state (each per-variable slot list: SGD's momentums, Adam's
    moments...) of every (new variable, old variable) pair from `old` to `new`."""
    size = len(old._trainable_variables)
    for name, slots in vars(old).items():
        if not (isinstance(slots, list) and len(slots) == size and size
                and all(isinstance(v, keras.Variable) for v in slots)):
            continue
        if name == "_trainable_variables":
            continue
        target = getattr(new, name, None)
        if not isinstance(target, list) or len(target) != len(new._trainable_variables):
            continue
        for new_variable, old_variable in pairs:
            if new._var_key(new_variable) in new._trainable_variables_indices:  # not BN statistics
                target[new._get_variable_index(new_variable)].assign(slots[old._get_variable_index(old_variable)])


def metric_names(tasks, validation=True):
    """The names a Trainer of `tasks` logs per epoch (with `val_` ones when
    `validation`), known before any model is built: tuning checks objectives against it."""
    names = ["loss", "mean_loss", *sorted({f"mean_{t.metric}" for t in tasks})]
    names += [f"{t.name}_{k}" for t in tasks for k in ("loss", t.metric)]
    return names + ([f"val_{n}" for n in names] if validation else [])


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_positive_int(name, value):
    if not _is_int(value) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")


class _HistoryCSV(keras.callbacks.CSVLogger):
    """Keras's CSVLogger, except that a resumed run whose epochs log other keys than the
    file's header (a newer version logging more, another callback) rewrites the file under
    the union of both, earlier rows blank where they have no value, instead of appending
    rows whose columns no longer match the header."""

    def on_epoch_end(self, epoch, logs=None):
        if self.keys is None and self.append and not self.append_header:
            with open(self.filename, newline="") as f:
                rows = list(csv.reader(f))
            header = rows[0][1:] if rows else []
            new = sorted(logs or {})
            if not any(k.startswith("val_") for k in new):
                new += [f"val_{k}" for k in new]  # as CSVLogger names them
            if header and header != new:
                union = sorted(set(header) | set(new))
                text = io.StringIO()
                writer = csv.DictWriter(text, fieldnames=["epoch", *union], restval="")
                writer.writeheader()
                writer.writerows(dict(zip(rows[0], r)) for r in rows[1:] if r)
                self.csv_file.close()
                atomic_write_bytes(Path(self.filename), text.getvalue().encode())
                self.csv_file = open(self.filename, "a", newline="")
                self.keys = union
            elif header:
                self.keys = header
        super().on_epoch_end(epoch, logs)


def _trim_history(path, epochs):
    """Keeps the rows of `history.csv` of the first `epochs` epochs: a run killed after
    an epoch's row was written but before its checkpoint trains that epoch again."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if len(rows) <= 1:
        return
    header, body = rows[0], rows[1:]
    kept = [r for r in body if r and int(r[header.index("epoch")]) < epochs]
    if len(kept) != len(body):
        text = io.StringIO()
        csv.writer(text).writerows([header, *kept])
        atomic_write_bytes(path, text.getvalue().encode())


def fit(model, x, y=None, weighting="equal", epochs=1, run_dir=None, **kwargs):
    """`Trainer(model, weighting=..., run_dir=...).fit(x, y, epochs=...)` in one call.
    Keyword arguments go to the Trainer or to `fit`, whichever takes them."""
    trainer_keys = {"tasks", "optimizer", "learning_rate", "distribution", "seed", "shuffle", "update",
                    "groups", "steps_per_execution", "checkpoint_every"}
    trainer = Trainer(model, weighting=weighting, run_dir=run_dir,
                      **{k: v for k, v in kwargs.items() if k in trainer_keys})
    return trainer.fit(x, y, epochs=epochs, **{k: v for k, v in kwargs.items() if k not in trainer_keys})
