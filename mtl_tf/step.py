"""One multi-task training step: what the Trainer's compiled loop runs on every replica,
and what a Keras model's `train_step` runs (one computation, one place).

Per step: the per-task masked losses under a tape; then either one backward pass of the
weighting strategy's total loss (loss-level strategies), or per-task gradients at the
shared representation (or at every shared weight) combined by the strategy, sent into
the shared part with `output_gradients`, and the heads' own gradients from the same
backward pass (gradient-level strategies). Models without a cut between shared and task
layers get one backward pass per task instead, combined over the variables several tasks
share. Under several replicas every combination is the one-device one: the losses, Gram
matrices and per-task gradients are all-reduced before the strategy sees them.
"""

import warnings

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from mtl_tf.gradients import flatten, unflatten
from mtl_tf.graph_cut import find_parts

NON_FINITE = "Non-finite loss of task"
NO_CUT = ("a layer's weights serve several tasks' own paths, or every layer mixes the tasks, "
          "as Cross-stitch's")


class MultiTaskStep:
    """The step of `model` (a functional model with dict outputs keyed by task) for
    `tasks`, a built weighting strategy and an optimizer, under `distribution`.

    `train(x, y)` and `evaluate(x, y)` run in a replica context (inside
    `distribution.run`, or on one device) and return the batch's statistics: per-task
    loss and metric sums and label counts of this replica's examples, and, for `train`,
    the task weights divided by the number of replicas (their sum over replicas is the
    weights). `capture` (Selective Sharing's branch-point sums) is set by the Trainer.
    """

    def __init__(self, model, tasks, weighting, optimizer, distribution, update="joint", groups=None,
                 parts=None):
        self.tasks = tuple(tasks)
        self.task_names = tuple(t.name for t in self.tasks)
        self.weighting, self.optimizer, self.distribution = weighting, optimizer, distribution
        self.update, self.groups = update, groups
        self.capture = None
        self._scale = None  # the loss scale of the step being traced
        self.set_model(model, parts)

    def set_model(self, model, parts, optimizer=None):
        """Steps `model` from now on (its parts found by `find_model_parts`), with
        `optimizer` if given."""
        self.model, self.parts = model, parts
        self.optimizer = optimizer or self.optimizer
        if self.update == "alternating":
            self._group_tasks = [[t for i, t in enumerate(self.tasks) if g.numpy()[i]] for g in self.groups]
            self._group_models = [keras.Model(model.inputs, {t.name: model.output[t.name] for t in ts})
                                  for ts in self._group_tasks]

    def losses(self, y, outputs):
        """Per-task losses, T. Each task's loss is the mean over the labelled examples of
        the global batch, so replicas holding different numbers of labelled examples
        still add up to the one-device loss: the value is the global loss, the gradient
        flows through this replica's share of it. Also returns the losses as a list
        (each depends only on its own task's output, so a gradient of one task's loss
        is None for a variable only other tasks reach), and the local sums and counts."""
        zero = (tf.zeros([]), tf.zeros([]))  # a task with no output here (another group's)
        sums, counts = zip(*(t.loss_sum(y[t.name], outputs[t.name]) if t.name in outputs else zero
                             for t in self.tasks))
        context = tf.distribute.get_replica_context()
        if self.distribution.num_replicas_in_sync == 1 or context is None:
            per_task = [tf.math.divide_no_nan(s, c) for s, c in zip(sums, counts)]
        else:
            global_counts = context.all_reduce("SUM", tf.stack(counts))
            shares = [tf.math.divide_no_nan(s, global_counts[i]) for i, s in enumerate(sums)]
            totals = context.all_reduce("SUM", tf.stop_gradient(tf.stack(shares)))
            per_task = [share + tf.stop_gradient(totals[i] - share) for i, share in enumerate(shares)]
        return tf.stack(per_task), per_task, tf.stack(sums), tf.stack(counts)

    def stats(self, y, outputs, sums, counts):
        metric = tf.stack([t.metric_sum(y[t.name], outputs[t.name]) if t.name in outputs else tf.zeros([])
                           for t in self.tasks])
        return {"loss_sum": tf.stop_gradient(sums), "metric_sum": metric, "count": counts}

    def train(self, x, y):
        if self.update == "alternating":
            return self._alternating(x, y)
        replicas = self.distribution.num_replicas_in_sync
        mode = self.weighting.grad_mode
        capture = self.capture
        self._scale = _loss_scale(self.optimizer)
        state = [v.read_value() for v in self.weighting.variables] if self._scale is not None else []
        with tf.GradientTape(persistent=mode is not None) as tape:
            if self.parts is not None:
                z, _, copies, outputs, taps = self.parts.forward(
                    x, training=True, taps=capture.tapped if capture else ())
            else:
                outputs = self.model(x, training=True)
            losses, task_losses, sums, counts = self.losses(y, outputs)
            # Everything after depends on these checks, so a NaN or Inf loss stops the
            # step before the optimizer or the weighting state sees it.
            task_losses = [tf.debugging.check_numerics(loss, f"{NON_FINITE} {name!r} ")
                           for name, loss in zip(self.task_names, task_losses)]
            losses = tf.stack(task_losses)
            # Everything differentiated is computed here, inside the tape. The optimizer
            # sums gradients over replicas: each replica's share of the losses adds up to
            # the global gradient; terms every replica computes in full are divided.
            summed = tf.reduce_sum(losses)
            regularization = tf.add_n(self.model.losses) / replicas if self.model.losses else 0.0
            if mode is None:
                total = self.weighting.total_loss(losses) + regularization
        captured = None
        if mode is None:
            model_variables = self.model.trainable_variables
            variables = model_variables + self.weighting.trainable
            if capture is None:
                grads = self._gradient(tape, total, variables)
            else:
                # The same backward pass also reaches the tapped pre-activations and each
                # task's loss: dividing by d total / d L_t undoes the task's weight.
                grads = self._gradient(tape, total, variables + capture.pre(taps) + task_losses)
                grads, tap_grads, scale = _split(grads, len(variables), len(capture.tapped))
                scale = [tf.zeros([]) if g is None else g for g in scale]
                captured = capture.kernels(model_variables, grads, taps, tap_grads, scale)
            grads = grads[: len(model_variables)] + [g / replicas for g in grads[len(model_variables):]]
            weights = self.weighting.loss_weights(losses)
        elif self.parts is None:
            variables, grads, weights = self._parameter_level(tape, task_losses, losses)
            if self.model.losses:
                extra = self._gradient(tape, regularization, variables)
                grads = [g if e is None else g + e for g, e in zip(grads, extra)]
            del tape
        else:
            shared = self.parts.shared_variables
            flat_heads = self.parts.head_variables
            tapped = capture.pre(taps) if capture else []
            rep_and_heads = self._gradient(tape, summed, [copies[t] for t in self.task_names] + flat_heads + tapped)
            # In float32 whatever the policy: Gram matrices, norms and projections need it.
            rep_grads = tf.cast(tf.stack(rep_and_heads[: len(self.tasks)]), tf.float32)
            head_grads = rep_and_heads[len(self.tasks): len(self.tasks) + len(flat_heads)]
            if capture:
                ones = [tf.ones([])] * len(self.tasks)
                captured = capture.kernels(flat_heads, head_grads, taps,
                                           rep_and_heads[len(self.tasks) + len(flat_heads):], ones)
            if mode == "representation":
                combined, weights = self._combine_examples(
                    tf.reshape(rep_grads, [len(self.tasks), -1]), losses)
                shared_grads = self._gradient(tape, z, shared, tf.reshape(combined, tf.shape(z)))
            elif self.weighting.batch_splits > 1:
                combined, weights = self._combine_splits(tape, z, shared, rep_grads, y, losses)
                shared_grads = unflatten(combined, shared)
            else:
                per_task = self._shared_gradients(tape, z, shared, rep_grads)
                combined, weights = self._combine_parameters(
                    tf.stack([flatten(g) for g in per_task]), losses)
                shared_grads = unflatten(combined, shared)
            if self.weighting.weights_heads:
                head_grads = self._weigh_paths(tape, flat_heads, head_grads, weights, losses)
            variables = shared + flat_heads
            grads = list(shared_grads) + list(head_grads)
            if self.model.losses:
                extra = self._gradient(tape, regularization, variables)
                grads = [g if e is None else g + e for g, e in zip(grads, extra)]
            del tape
        if mode is not None and self.weighting.trainable:
            # A gradient-level strategy's own variables (IMTL's loss scales) follow its
            # total_loss, which the losses enter as constants; every replica's is global.
            with tf.GradientTape() as own_tape:
                own = self.weighting.total_loss(tf.stop_gradient(losses))
            own_grads = own_tape.gradient(own, self.weighting.trainable)
            variables = list(variables) + self.weighting.trainable
            grads = list(grads) + [g / replicas for g in own_grads]
        # After the weights are read: a strategy's observe() prepares the next step's.
        self.weighting.observe(losses)
        if self._scale is not None:  # the loss scale optimizer unscales them (a power of 2: exactly)
            finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None])
            grads = [None if g is None else g * self._scale for g in grads]
        self.optimizer.apply_gradients(zip(grads, variables))
        if self.weighting.needs_losses_after_step:
            self.weighting.after_step(losses, self.losses(y, self.model(x, training=True))[0])
        stats = self.stats(y, outputs, sums, counts)
        stats["weights"] = tf.cast(weights, tf.float32) / replicas
        if self._scale is not None:
            # A step the loss scale overflowed is skipped by the optimizer, and by the
            # strategy too: its state goes back to what it was.
            for variable, before in zip(self.weighting.variables, state):
                variable.assign(tf.where(finite, variable, before))
            stats["skipped"] = (1.0 - tf.cast(finite, tf.float32)) / replicas
        if captured is not None:
            stats["captured"] = captured
        return stats

    def _gradient(self, tape, target, sources, upstream=None):
        """`tape.gradient` of `target` (with `upstream` gradients), back-propagated at the
        optimizer's loss scale, if it has one, so that float16 activations keep their
        gradients, and returned unscaled in float32 (sources of lower precision, such as
        the cut's copies, are cast first): the combination sees the true gradients."""
        if self._scale is None:
            upstream = None if upstream is None else tf.cast(upstream, target.dtype)
            return tape.gradient(target, sources, output_gradients=upstream)
        seed = self._scale if upstream is None else tf.cast(upstream, tf.float32) * self._scale
        grads = tape.gradient(target, sources, output_gradients=tf.cast(seed, target.dtype))
        return [None if g is None else tf.cast(g, tf.float32) / self._scale for g in grads]

    def _shared_gradients(self, tape, z, shared, rep_grads):
        """Per task, the gradients of every shared variable from its gradient at the cut."""
        return [self._gradient(tape, z, shared, rep_grads[t]) for t in range(rep_grads.shape[0])]

    def _weigh_paths(self, tape, variables, grads, weights, losses):
        """Scales each path variable's (unweighted) gradient by its task's weight; the
        variables of a branch several tasks share get the gradient of their tasks'
        weighted losses instead (one more backward pass, through those branches only)."""
        owners = {}
        for i, t in enumerate(self.task_names):
            for v in self.parts.path_variables(t):
                owners.setdefault(id(v), []).append(i)
        scaled, shared = [], []
        for v, g in zip(variables, grads):
            (i, *others) = owners[id(v)]
            if others:
                shared.append(len(scaled))
                scaled.append(None)
            else:
                scaled.append(g * tf.cast(weights[i], g.dtype))
        if shared:
            # The gradient of sum_t w_t L_t: the recorded losses, weighted on the way back.
            weights = tf.stop_gradient(tf.cast(weights, losses.dtype))
            for index, g in zip(shared, self._gradient(tape, losses, [variables[j] for j in shared], weights)):
                scaled[index] = g
        return scaled

    def _alternating(self, x, y):
        """Paper 001's Algorithm 1: for each group of tasks in turn, a forward pass and one
        optimizer step on that group's part of the weighted loss (`Weighting.group_loss`).
        A task's unlabelled examples are masked out of its loss, so a supervised group
        steps on the batch's labelled part only. Each variable is updated by the groups
        whose losses reach it. Statistics of a task come from its own group's pass."""
        replicas = self.distribution.num_replicas_in_sync
        variables = self.model.trainable_variables + self.weighting.trainable
        stats = None
        for mask, submodel, members in zip(self.groups, self._group_models, self._group_tasks):
            # Only the group's outputs, on the examples some task of the group has a label
            # for: the supervised step of a semi-supervised batch runs on its labelled part.
            labelled = tf.reduce_any(tf.stack([t.label_mask(y[t.name]) > 0 for t in members]), axis=0)
            xg = tf.boolean_mask(x, labelled)
            yg = {k: tf.boolean_mask(v, labelled) for k, v in y.items()}
            with tf.GradientTape() as tape:
                outputs = submodel(xg, training=True)
                _, task_losses, sums, counts = self.losses(yg, outputs)
                task_losses = [tf.debugging.check_numerics(loss, f"{NON_FINITE} {name!r} ")
                               for name, loss in zip(self.task_names, task_losses)]
                losses = tf.stack(task_losses)
                total = self.weighting.group_loss(losses, mask)
                if self.model.losses:
                    total += tf.add_n(self.model.losses) / replicas
            grads = tape.gradient(total, variables)
            model_count = len(self.model.trainable_variables)
            grads = grads[:model_count] + [None if g is None else g / replicas for g in grads[model_count:]]
            self.optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
            group_stats = self.stats(yg, outputs, sums, counts)
            group_stats["losses"] = losses
            stats = {k: v * mask if stats is None else stats[k] + v * mask for k, v in group_stats.items()}
        losses = stats.pop("losses")  # each task's from its own group's pass
        stats["weights"] = tf.cast(self.weighting.loss_weights(losses), tf.float32) / replicas
        self.weighting.observe(losses)
        return stats

    # Under several replicas the combination is the one-device one (a two-worker run
    # matches one process), not a combination of each replica's own gradients.
    def _combine_examples(self, grads, losses):
        """Per-task gradients at the representation of this replica's examples (T x D):
        the replicas' Gram matrices add up to the global batch's, and every strategy
        needs the gradients only through it, so one T x T all-reduce makes it exact."""
        gram = tf.matmul(grads, grads, transpose_b=True)
        if self.distribution.num_replicas_in_sync > 1:
            gram = tf.distribute.get_replica_context().all_reduce("SUM", gram)
        coefficients, weights = self.weighting.coefficients(gram, losses)
        return tf.linalg.matvec(grads, coefficients, transpose_a=True), weights

    def _combine_parameters(self, grads, losses):
        """Per-task gradients of the shared weights (T x P): each replica holds its share
        of each, so they are summed first, combined, and each replica applies its part
        (the optimizer sums the replicas' gradients)."""
        replicas = self.distribution.num_replicas_in_sync
        if replicas > 1:
            grads = tf.distribute.get_replica_context().all_reduce("SUM", grads)
        combined, weights = self.weighting.combine(grads, losses)
        return combined / replicas, weights

    def _combine_splits(self, tape, z, shared, rep_grads, y, losses):
        """Per-task gradients of the shared weights on k disjoint parts of the batch, for
        strategies that need independent samples (MoDo, SDMGrad). Example i of the global
        batch is in part i mod k, so the parts are the same whatever the replicas (each
        replica's shard is a contiguous block of equal size). A part's loss is the mean
        over its labelled examples: its gradient at the representation is the whole
        batch's, restricted to the part and rescaled by count / part count."""
        k = self.weighting.batch_splits
        context = tf.distribute.get_replica_context()
        replicas = self.distribution.num_replicas_in_sync
        local = tf.shape(z)[0]
        position = tf.range(local)
        if replicas > 1:
            position += context.replica_id_in_sync_group * local
        part = tf.one_hot(position % k, k)  # B x k
        labelled = tf.stack([t.label_mask(y[t.name]) for t in self.tasks])  # T x B
        counts = tf.einsum("tb,bk->tk", labelled, part)
        totals = tf.reduce_sum(labelled, axis=1)
        if replicas > 1:
            counts, totals = context.all_reduce("SUM", counts), context.all_reduce("SUM", totals)
        parts = []
        for j in range(k):
            scale = tf.math.divide_no_nan(totals, counts[:, j])  # T
            mask = tf.reshape(part[:, j], [-1] + [1] * (len(rep_grads.shape) - 2))
            masked = rep_grads * mask[None] * tf.reshape(scale, [-1] + [1] * (len(rep_grads.shape) - 1))
            grads = tf.stack([flatten(g) for g in self._shared_gradients(tape, z, shared, masked)])
            if replicas > 1:
                grads = context.all_reduce("SUM", grads)
            parts.append(grads)
        combined, weights = self.weighting.combine_parts(parts, losses)
        return combined / replicas, weights

    def _parameter_level(self, tape, task_losses, losses):
        """A gradient-level step for a model without `trunk` and `head_<task>` parts
        (Siamese pipes): each task's gradient of every variable, one backward pass per
        task. Variables more than one task reaches are shared: the strategy combines the
        tasks' gradients of those, flattened. The others belong to one task, and get its
        gradient, scaled by its weight if the strategy weights heads."""
        variables = self.model.trainable_variables
        per_task = [self._gradient(tape, loss, variables) for loss in task_losses]
        reached = [[g[j] is not None for g in per_task] for j in range(len(variables))]
        shared = [j for j in range(len(variables)) if sum(reached[j]) > 1]
        if not shared:
            raise ValueError(f"Model {self.model.name!r} has no variable that two tasks share, "
                             f"so a gradient-level strategy has nothing to combine.")
        shared_vars = [variables[j] for j in shared]
        stacked = tf.stack([flatten([tf.zeros_like(variables[j]) if g[j] is None else g[j]
                                     for j in shared]) for g in per_task])
        combined, weights = self._combine_parameters(stacked, losses)
        grads = dict(zip(shared, unflatten(combined, shared_vars)))
        for j in range(len(variables)):
            owners = [t for t in range(len(per_task)) if reached[j][t]]
            if j not in grads and owners:
                (t,) = owners
                grads[j] = per_task[t][j] * tf.cast(weights[t], variables[j].dtype) \
                    if self.weighting.weights_heads else per_task[t][j]
        return [variables[j] for j in grads], list(grads.values()), weights

    def evaluate(self, x, y):
        outputs = self.model(x, training=False)
        _, _, sums, counts = self.losses(y, outputs)
        return self.stats(y, outputs, sums, counts)


def _loss_scale(optimizer):
    """A `LossScaleOptimizer`'s current scale (float32), else None."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return tf.cast(optimizer.dynamic_scale if optimizer.built else optimizer.initial_scale, tf.float32)
    return None


def epoch_logs(tasks, totals):
    """The logs of summed statistics (`loss_sum`, `metric_sum`, `count`, each T): each
    task's mean loss and metric over its labelled examples, their sum `loss`,
    `mean_loss`, and `mean_<metric>` over the tasks of each metric. Arrays or tensors."""
    counts = ops.maximum(totals["count"], 1.0)
    logs = {}
    for i, task in enumerate(tasks):
        logs[f"{task.name}_loss"] = totals["loss_sum"][i] / counts[i]
        logs[f"{task.name}_{task.metric}"] = totals["metric_sum"][i] / counts[i]
    logs["loss"] = sum(logs[f"{t.name}_loss"] for t in tasks)
    # One number over tasks, for model selection and tuning objectives.
    logs["mean_loss"] = logs["loss"] / len(tasks)
    for metric in sorted({t.metric for t in tasks}):
        values = [logs[f"{t.name}_{metric}"] for t in tasks if t.metric == metric]
        logs[f"mean_{metric}"] = sum(values) / len(values)
    return logs


def find_model_parts(model, task_names, weighting, stacklevel=3):
    """Where the step taps per-task gradients: the `trunk` and `head_<task>` parts, or,
    for gradient-level strategies on other models, the graph's cut (None: none, said
    once for a strategy that would have used the representation)."""
    parts = find_parts(model, task_names, cut=weighting.grad_mode is not None)
    if parts is None and weighting.grad_mode == "representation":
        warnings.warn(f"Model {model.name!r} has no cut between shared and task layers ({NO_CUT}): "
                      f"{weighting.name!r} combines each task's gradients of the shared weights "
                      f"instead (mode='parameters', one backward pass per task).", stacklevel=stacklevel)
    return parts


def prepare_parts(model, task_names, weighting):
    """`find_model_parts` for a step being set up: refuses a strategy that needs a cut
    on a model without one, and sizes the strategy's per-weight state."""
    parts = find_model_parts(model, task_names, weighting, stacklevel=4)
    if (weighting.gradient_state or weighting.batch_splits > 1) and parts is None:
        raise ValueError(f"Weighting {weighting.name!r} needs a model whose shared layers are cut off "
                         f"from each task's own ones (it keeps state per shared weight or splits the "
                         f"batch); model {model.name!r} has no such cut ({NO_CUT}).")
    if weighting.gradient_state:
        weighting.build_gradient_state(sum(int(np.prod(v.shape)) for v in parts.shared_variables))
    return parts


def _split(values, *sizes):
    """`values` cut into consecutive pieces of `sizes`, and the rest."""
    pieces, start = [], 0
    for size in sizes:
        pieces.append(values[start: start + size])
        start += size
    return [*pieces, values[start:]]
