"""CAGrad (Liu et al., NeurIPS 2021)."""

import tensorflow as tf

from mtl_tf.weighting.base import check_number, register
from mtl_tf.weighting.gradient_level import GradientLevel
from mtl_tf.weighting.min_norm import min_norm_weights

# The root of t = s(t) is found to this share of the largest gradient norm.
_ROOT_TOLERANCE = 1e-13
_ROOT_STEPS = 100


def cagrad_weights(gram, c):
    """The minimiser w of CAGrad's dual F(w) = g_w . g0 + r ||g_w|| on the simplex
    (g_w = G^T w, g0 the mean gradient, r = c ||g0||), exact to float64 rounding, and
    `ratio` = r / ||g_w||, so that the direction is g0 + ratio * g_w.

    Why it is exact: r ||g_w|| = min_{t > 0} (r / 2) (||g_w||^2 / t + t), so
    min_w F = min_t h(t) with h(t) = min_w [w^T G g0 + r / (2 t) ||g_w||^2] + r t / 2:
    for a fixed t the inner problem is the min-norm point of the shifted gradients
    g_i + (t / r) g0 (Wolfe's algorithm, exact), and h is convex in t with
    h'(t) = (r / 2) (1 - s(t)^2 / t^2), s(t) the inner point's norm. So t* is the one root
    of t = s(t) in [0, max_i ||g_i||], found by the Illinois method (bracketing, so it
    always converges) to 1e-13 of the largest norm.

    A task whose gradient is exactly zero is left out of the hull: g_k . d = 0 whatever
    d, so it constrains nothing, and keeping it would make the dual's minimiser g_w = 0 and
    its direction undefined (the mirror-descent solver then stepped a full radius along
    an arbitrary task). When the hull of the others still holds 0 (they are Pareto
    stationary), no direction in the ball improves every task; the result is then g0
    (`ratio` 0), as LibMTL's code gives when its normalised g_w is 0.
    """
    g = tf.cast(gram, tf.float64)
    g = (g + tf.transpose(g)) / 2
    t = g.shape[0]
    top = tf.reduce_max(tf.linalg.diag_part(g))
    g = tf.math.divide_no_nan(g, top)  # the largest norm is 1: t lies in [0, 1]
    b = tf.reduce_mean(g, axis=1)  # G g0
    r = c * tf.sqrt(tf.maximum(tf.reduce_mean(b), 0.0))
    allowed = tf.linalg.diag_part(g) > 1e-24
    uniform = tf.fill([t], tf.constant(1.0 / t, tf.float64))

    def inner(point):
        # ||g_w + mu g0||^2 without its constant mu^2 ||g0||^2: the same on the simplex.
        mu = tf.math.divide_no_nan(point, r)
        shifted = g + mu * (b[:, None] + b[None, :])
        w = min_norm_weights(shifted, allowed=allowed,
                             scale=tf.maximum(tf.ones([], tf.float64), 2.0 * mu * tf.reduce_max(tf.abs(b))))
        return w, point - tf.sqrt(tf.maximum(tf.tensordot(w, tf.linalg.matvec(g, w), 1), 0.0))

    def solve():
        w_lo, f_lo = inner(tf.constant(0.0, tf.float64))
        w_hi, f_hi = inner(tf.constant(1.0, tf.float64))

        def cond(i, lo, f_lo, hi, f_hi, w):
            return tf.logical_and(i < _ROOT_STEPS, tf.logical_and(
                tf.abs(f_hi) > _ROOT_TOLERANCE, tf.abs(hi - lo) > _ROOT_TOLERANCE))

        def body(i, lo, f_lo, hi, f_hi, w):
            point = tf.clip_by_value(hi - f_hi * tf.math.divide_no_nan(hi - lo, f_hi - f_lo), 0.0, 1.0)
            w, f = inner(point)
            crossed = f * f_hi < 0
            lo, f_lo = tf.where(crossed, hi, lo), tf.where(crossed, f_hi, f_lo / 2)
            return i + 1, lo, f_lo, point, f, w

        start = (0, tf.constant(0.0, tf.float64), f_lo, tf.constant(1.0, tf.float64), f_hi, w_hi)
        _, _, _, _, _, w = tf.while_loop(cond, body, start)
        # s(0) = 0: the min-norm point of the hull is 0, the degenerate case above.
        stationary = -f_lo <= _ROOT_TOLERANCE
        w = tf.where(stationary, w_lo, w)
        norm = tf.sqrt(tf.maximum(tf.tensordot(w, tf.linalg.matvec(g, w), 1), 0.0))
        ratio = tf.where(stationary, tf.zeros([], tf.float64), tf.math.divide_no_nan(r, norm))
        return w, ratio

    def trivial():  # c = 0, all gradients zero, or g0 = 0: the direction is g0
        return uniform, tf.zeros([], tf.float64)

    w, ratio = tf.cond(tf.logical_and(top > 0, r > 0), solve, trivial)
    return tf.cast(w, gram.dtype), tf.cast(ratio, gram.dtype)


@register("cagrad")
class CAGrad(GradientLevel):
    """Conflict-Averse Gradient descent (Liu et al., NeurIPS 2021).

    The direction d maximising min_i g_i . d within the ball ||d - g0|| <= c ||g0|| (g0
    the mean gradient): by the paper's dual, d = g0 + c ||g0|| g_w / ||g_w|| with w on
    the simplex minimising g_w . g0 + c ||g0|| ||g_w||, g_w = sum_i w_i g_i. Returns
    T d / (1 + c^2): the division is the authors' and LibMTL's default (`rescale=1`), the
    T makes the step size match the sum of the losses.

    The dual is solved exactly (`cagrad_weights`: a root-find over Wolfe min-norm
    solves), where the authors and LibMTL run 20 steps of SLSQP (scipy) on the
    normalised problem and this library ran 100 steps of mirror descent: those are 1-7%
    off the optimum at T = 3-10 and fail when gradient norms differ by orders of
    magnitude.

    Args:
        c: float. The conflict-aversion radius. Defaults to `0.5` (the paper's and LibMTL's).
        mode: `"representation"` or `"parameters"`.
    """

    def __init__(self, c=0.5, mode="representation"):
        super().__init__(mode)
        self.c = float(check_number("c", c, low=0))

    def coefficients(self, gram, losses):
        t = self.num_tasks
        w, ratio = cagrad_weights(gram, self.c)
        direction = tf.ones_like(w) / t + ratio * w
        return t * direction / (1.0 + self.c**2), w

    def get_config(self):
        return {**super().get_config(), "c": self.c}
