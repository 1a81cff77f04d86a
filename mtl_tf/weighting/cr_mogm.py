"""CR-MOGM, the moving average of a gradient method's weights (Zhou et al., NeurIPS 2022)."""

import tensorflow as tf

from mtl_tf.weighting import base as base_lib
from mtl_tf.weighting.base import check_number, register, state_variable
from mtl_tf.weighting.gradient_level import GradientLevel
from mtl_tf.weighting.per_task_gradients import PerTaskGradients


@register("cr_mogm")
class CRMOGM(GradientLevel):
    """Correlation-reduced stochastic multi-objective gradient manipulation (Zhou, Zhang,
    Jiang, Zhong, Gu and Zhu, "On the Convergence of Stochastic Multi-Objective Gradient
    Manipulation and Beyond", NeurIPS 2022; TorchJD's `CRMOGMWeighting`): a Gram
    strategy's coefficients, averaged over steps, lambda_k = alpha lambda_{k-1} +
    (1 - alpha) lambda^_k, where lambda^_k is what the `base` strategy gives on this
    batch. The average removes the bias that the weights' correlation with the same
    batch's gradients gives MGDA, PCGrad and CAGrad.

    From TorchJD: `alpha` = 0.9, and the first step takes the base's weights (lambda_0 =
    lambda^_1; earlier TorchJD drafts start from 1/T). The paper lets alpha follow the
    learning rate (Corollary 1); a fixed alpha here. The base is any Gram strategy that
    leaves the heads their own gradients; its own state is kept in the checkpoint.

    Args:
        base: a Gram strategy's name or config dict. Defaults to `"mgda"`.
        alpha: float in [0, 1]. Defaults to `0.9`.
        mode: `"representation"` or `"parameters"`, given to the base.
    """

    def __init__(self, base="mgda", alpha=0.9, mode="representation"):
        super().__init__(mode)
        self.alpha = float(check_number("alpha", alpha, low=0, high=1))
        name = base if isinstance(base, str) else base.get("class_name") if isinstance(base, dict) else None
        kind = base_lib.strategy_class(name) if name in base_lib.available() else None
        if (kind is None or not issubclass(kind, GradientLevel) or issubclass(kind, (PerTaskGradients, CRMOGM))
                or kind.weights_heads or kind.batch_splits > 1):
            raise ValueError(f"`base` must name a Gram strategy that leaves the heads their own "
                             f"gradients (mgda, cagrad, pcgrad, upgrad, ...). Received: base={base!r}")
        strategy = base_lib.get(base, mode=mode)
        self.base = strategy

    def build(self, num_tasks):
        super().build(num_tasks)
        self.base.build(num_tasks)
        self.average = state_variable(tf.zeros([num_tasks]), name="average")
        self.average_weights = state_variable(tf.zeros([num_tasks]), name="average_weights")
        self.started = state_variable(False, name="started")
        return self

    def coefficients(self, gram, losses):
        coefficients, weights = self.base.coefficients(gram, losses)
        for state, new in ((self.average, coefficients), (self.average_weights, weights)):
            new = tf.cast(new, tf.float32)
            state.assign(tf.where(self.started, self.alpha * state + (1 - self.alpha) * new, new))
        self.started.assign(True)
        return tf.cast(self.average, gram.dtype), self.average_weights

    def observe(self, losses):
        self.base.observe(losses)

    def on_epoch_begin(self, epoch):
        super().on_epoch_begin(epoch)
        self.base.on_epoch_begin(epoch)

    def on_epoch_end(self, epoch):
        self.base.on_epoch_end(epoch)

    def get_config(self):
        config = {k: v for k, v in self.base.get_config().items() if k != "mode"}
        return {**super().get_config(), "base": {"class_name": self.base.name, "config": config},
                "alpha": self.alpha}
