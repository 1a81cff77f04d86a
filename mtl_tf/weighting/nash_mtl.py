"""Nash-MTL (Navon et al., ICML 2022)."""

from mtl_tf.weighting.base import register
from mtl_tf.weighting.fair_allocation import check_max_norm, clip_coefficients, fair_weights
from mtl_tf.weighting.gradient_level import GradientLevel


@register("nash_mtl")
class NashMTL(GradientLevel):
    """Nash-MTL (Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik and Fetaya,
    "Multi-Task Learning as a Bargaining Game", ICML 2022): the Nash bargaining solution
    d = sum_t alpha_t g_t with G alpha = 1 / alpha (g_t . d = 1 / alpha_t),
    solved exactly (`fair_allocation.fair_weights`, p = 1). d does not change when a
    task's gradient is scaled, and ||d||^2 = T.

    Then, as the authors (and LibMTL) clip the shared gradient's norm to `max_norm`,
    the coefficients are scaled so that ||d|| <= max_norm (as TorchJD does it, in the
    gradient mode chosen). The authors' `update_weights_every` (reuse the weights for k
    steps) is not offered: the exact solve costs about one Gram matrix. The heads get
    their own tasks' gradients, unweighted (the authors weight them by alpha).

    Args:
        max_norm: float or None. Defaults to `1.0` (the authors' and LibMTL's).
        mode: `"representation"` or `"parameters"`.
    """

    def __init__(self, max_norm=1.0, mode="representation"):
        super().__init__(mode)
        self.max_norm = check_max_norm(max_norm)

    def coefficients(self, gram, losses):
        alpha = fair_weights(gram, 1.0)
        return clip_coefficients(gram, alpha, self.max_norm), alpha

    def get_config(self):
        return {**super().get_config(), "max_norm": self.max_norm}
