"""The base of strategies that need the per-task gradients themselves, not only their
inner products (DB-MTL, MoCo, ExcessMTL, GradDrop, TrimmedMean): they run in parameter mode, on the
T x P gradients of the shared weights. Under several replicas those are all-reduced
before `combine`, so the result is the one-device one.

Strategies with state per task and per shared weight (`gradient_state = True`) get the
number P of shared weights from the trainer (`build_gradient_state(P)`) before the first
step, so their state variables exist, and are checkpointed, from the start.
"""

from mtl_tf.weighting.gradient_level import GradientLevel


class PerTaskGradients(GradientLevel):
    gradient_state = False

    def __init__(self, mode="parameters"):
        if mode != "parameters":
            raise ValueError(f"`mode` must be 'parameters' for {type(self).__name__}: it needs each "
                             f"task's gradient of the shared weights (at the representation the "
                             f"examples, and so the coordinates, change every batch). Received: mode={mode!r}")
        super().__init__(mode)

    def build_gradient_state(self, size):
        """Creates the state for `size` shared weights; called once by the trainer."""
        del size

    def coefficients(self, gram, losses):
        raise ValueError(f"{type(self).__name__} needs the per-task gradients, not only their Gram matrix.")
