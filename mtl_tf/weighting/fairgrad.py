"""FairGrad (Ban and Ji, ICML 2024)."""

from mtl_tf.weighting.base import check_number, register
from mtl_tf.weighting.fair_allocation import check_max_norm, clip_coefficients, fair_weights
from mtl_tf.weighting.gradient_level import GradientLevel


@register("fairgrad")
class FairGrad(GradientLevel):
    """FairGrad (Ban and Ji, "Fair Resource Allocation in Multi-Task Learning", ICML
    2024): the alpha-fair allocation d = sum_t w_t g_t with G w = w^(-1/alpha) (the
    paper's G^T G is the Gram matrix here), solved exactly (`fair_allocation.fair_weights`). alpha = 1 is Nash-MTL; a larger alpha is fairer.

    The authors multiply d by T and then clip the shared gradient's norm to `max_norm`;
    here d is clipped to `max_norm` (LibMTL does neither). The heads get their own
    tasks' gradients, unweighted (as in the authors' code).

    Args:
        alpha: float > 0. Defaults to `1.0` (the authors' and LibMTL's; their run scripts
            use 2.0 for CelebA and QM9).
        max_norm: float or None. Defaults to `1.0` (the authors').
        mode: `"representation"` or `"parameters"`.
    """

    def __init__(self, alpha=1.0, max_norm=1.0, mode="representation"):
        super().__init__(mode)
        self.alpha = float(check_number("alpha", alpha, low=0, low_open=True))
        self.max_norm = check_max_norm(max_norm)

    def coefficients(self, gram, losses):
        w = fair_weights(gram, 1.0 / self.alpha)
        return clip_coefficients(gram, w, self.max_norm), w

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "max_norm": self.max_norm}
