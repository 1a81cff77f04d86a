"""UPGrad and DualProj (Quinton and Rey, 2024; DualProj after Lopez-Paz and Ranzato, 2017)."""

import tensorflow as tf

from mtl_tf.weighting.base import register
from mtl_tf.weighting.dual_cone import project_weights
from mtl_tf.weighting.gradient_level import GradientLevel


@register("upgrad")
class UPGrad(GradientLevel):
    """Unconflicting Projection of Gradients (Quinton and Rey, "Jacobian Descent for
    Multi-Objective Optimization", 2024; TorchJD's `UPGrad`): each task gradient g_i is
    projected onto the dual cone {x : g_j . x >= 0 for all j} and the projections are
    summed. The result conflicts with no task's gradient, and is the sum of the
    gradients when none conflict. TorchJD and LibMTL average the projections (weights
    1/T); the sum here makes equal gradients step like the sum of the losses.

    Each projection is `dual_cone.project_weights` with u = e_i / T, solved exactly by
    an active-set method, without TorchJD's 1e-4 ridge (which lets the result conflict
    with a task whose gradient is small; see `dual_cone`).

    Args:
        mode: `"representation"` or `"parameters"`.
    """

    def coefficients(self, gram, losses):
        t = self.num_tasks
        projected = project_weights(gram, tf.eye(t, dtype=gram.dtype) / t)
        return t * tf.reduce_sum(projected, axis=0), tf.reduce_sum(projected, axis=0)


@register("dualproj")
class DualProj(GradientLevel):
    """DualProj (TorchJD's, after GEM's Eq. 11, Lopez-Paz and Ranzato, NeurIPS 2017): the
    mean gradient projected onto the dual cone of the task gradients, so that it
    conflicts with none; unchanged when it conflicts with none already. Times T, as
    UPGrad (TorchJD keeps the mean). Not in LibMTL.

    Args:
        mode: `"representation"` or `"parameters"`.
    """

    def coefficients(self, gram, losses):
        t = self.num_tasks
        projected = project_weights(gram, tf.fill([1, t], tf.constant(1.0 / t, gram.dtype)))[0]
        return t * projected, projected
