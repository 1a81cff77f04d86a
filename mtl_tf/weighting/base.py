"""The base of every loss-weighting strategy, and `get()` by name.

Two kinds of strategy, one interface:

- loss-level (fixed, equal, schedules, uncertainty, DWA): `total_loss(losses)` returns the
  scalar to differentiate; one backward pass serves the whole model.
- gradient-level (PCGrad, MGDA-UB, CAGrad, GradNorm): `grad_mode` is `"representation"`
  (per-task gradients at the shared representation, about one extra backward pass) or
  `"parameters"` (at every shared weight, one trunk backward per task). `combine(grads,
  losses)` receives the per-task gradients as a T x D matrix and returns the gradient to
  send into the shared trunk (D) and the per-task weights (T) applied to the heads' own
  losses if `weights_heads`, else only logged.

State lives in `tf.Variable`s tracked by this `tf.Module`, so a checkpoint of the strategy
resumes it.
The trainer calls `on_epoch_begin(epoch)` and `on_epoch_end(epoch)` at epoch boundaries
and `observe(losses)` every step; it never asks a strategy's name.
"""

import tensorflow as tf

from mtl_tf.names import check_arguments, unknown_name

_REGISTRY = {}


def register(name):
    """Class decorator: makes a strategy available to `get(name)`."""

    def decorator(cls):
        if name in _REGISTRY:
            raise ValueError(f"A weighting strategy named {name!r} is already registered "
                             f"({_REGISTRY[name].__module__}.{_REGISTRY[name].__name__}).")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def state_variable(initial_value, dtype=None, name=None):
    """A non-trainable state variable. Under a distribution strategy every replica holds
    the same value (strategies see the global losses) and updates it in replica context,
    so the first replica's update is the one kept."""
    return tf.Variable(initial_value, dtype=dtype, trainable=False, name=name,
                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)


def step_seed(seed, step):
    """The stateless seed of a strategy's draw at call `step`: (seed, step). Every replica
    draws the same, and a resumed run (the step is checkpointed) what the uninterrupted
    one would have."""
    return tf.stack([tf.constant(seed, tf.int64), tf.cast(step, tf.int64)])


def check_number(name, value, low=None, high=None, low_open=False, integer=False):
    """Refuses `value` unless it is a finite number (an integer if asked) within the
    bounds, naming the argument: `low < value` when `low_open`, else `low <= value`."""
    kinds = (int,) if integer else (int, float)
    ok = isinstance(value, kinds) and not isinstance(value, bool) and abs(value) < float("inf")
    ok = ok and (low is None or (value > low if low_open else value >= low))
    ok = ok and (high is None or value <= high)
    if not ok:
        bounds = (f"{'>' if low_open else '>='} {low}" if low is not None else "") + (
            f"{' and ' if low is not None else ''}<= {high}" if high is not None else "")
        raise ValueError(f"`{name}` must be {'an integer' if integer else 'a number'}"
                         f"{' ' + bounds if bounds else ''}. Received: {name}={value!r}")
    return value


def available():
    return sorted(_REGISTRY)


def strategy_class(name):
    """The class registered as `name` (its kind is in its class attributes)."""
    return _REGISTRY[name]


def get(identifier, **kwargs):
    """A strategy from a name (`"uncertainty"`), a config dict (`{"class_name": "lin",
    "config": {...}}`) or an instance (returned as is)."""
    if isinstance(identifier, Weighting):
        return identifier
    if isinstance(identifier, dict) and "class_name" in identifier:
        return get(identifier["class_name"], **{**identifier.get("config", {}), **kwargs})
    if isinstance(identifier, str) and identifier in _REGISTRY:
        check_arguments("Weighting strategy", identifier, _REGISTRY[identifier], kwargs)
        return _REGISTRY[identifier](**kwargs)
    raise unknown_name("weighting strategy", "weighting", identifier, _REGISTRY)


class Weighting(tf.Module):
    """Base class. Subclasses cite their paper and override what they change."""

    name = None
    grad_mode = None
    weights_heads = True
    # The trainer computes the batch's losses again after the optimizer's step and
    # passes both to `after_step` (FAMO).
    needs_losses_after_step = False
    # State per task and per shared weight: the trainer calls `build_gradient_state(P)`.
    gradient_state = False
    # Independent samples per step: the trainer splits the batch into this many parts and
    # calls `combine_parts` with each part's per-task gradients (MoDo, SDMGrad).
    batch_splits = 1
    # The fewest tasks the method is defined for with its defaults (Krum, TrimmedMean);
    # `build` refuses fewer for the instance's own parameters.
    min_tasks = 1

    def __init__(self):
        super().__init__(name=None)
        self.num_tasks = None
        self.epoch = state_variable(0, dtype=tf.int64, name="epoch")

    def build(self, num_tasks):
        """Creates the per-task state for `num_tasks` tasks; called once by the trainer."""
        if not isinstance(num_tasks, int) or num_tasks < 1:
            raise ValueError(f"`num_tasks` must be a positive integer. Received: num_tasks={num_tasks!r}")
        self.num_tasks = num_tasks
        return self

    @property
    def trainable(self):
        """Variables trained by the model's optimizer together with the model's weights."""
        return []

    # --- loss-level ----------------------------------------------------------------------
    def loss_weights(self, losses):
        return tf.ones([self.num_tasks])

    def total_loss(self, losses):
        return tf.reduce_sum(self.loss_weights(losses) * losses)

    def group_loss(self, losses, group):
        """The part of `total_loss` that belongs to the tasks where `group` (a T-vector of
        0/1) is 1: what an alternating update (paper 001's Algorithm 1) minimises for
        that group. Every strategy here is a sum of per-task terms."""
        return tf.reduce_sum(group * self.loss_weights(losses) * losses)

    # --- gradient-level ------------------------------------------------------------------
    def coefficients(self, gram, losses):
        """gram: the T x T Gram matrix of the per-task gradients. Returns (c, weights),
        each T: the combined gradient is sum_t c_t g_t. Every gradient-level strategy
        here needs the gradients only through their inner products, which is what makes
        it exact under several replicas: their Gram matrices add up."""
        raise NotImplementedError(f"{type(self).__name__} is a loss-level strategy.")

    def combine(self, grads, losses):
        """grads: T x D per-task gradients. Returns (shared gradient D, weights T)."""
        coefficients, weights = self.coefficients(tf.matmul(grads, grads, transpose_b=True), losses)
        return tf.linalg.matvec(grads, coefficients, transpose_a=True), weights

    # --- hooks ---------------------------------------------------------------------------
    def observe(self, losses):
        """Called in the training step with the batch's per-task losses."""
        del losses

    def after_step(self, before, after):
        """Called in the training step, after the optimizer's, with the batch's per-task
        losses before and after it, if `needs_losses_after_step`."""
        del before, after

    def on_epoch_begin(self, epoch):
        self.epoch.assign(epoch)

    def on_epoch_end(self, epoch):
        """Called outside the compiled step when an epoch ends."""
        del epoch

    def check_run_length(self, epochs):
        """Called by `fit` with the epoch the run ends at; a strategy whose schedule has
        a length of its own warns when the two differ."""
        del epochs

    def get_config(self):
        return {}
