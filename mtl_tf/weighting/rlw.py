"""RLW, random loss weighting (Lin et al., TMLR 2022)."""

import tensorflow as tf

from mtl_tf.weighting.base import Weighting, check_number, register, state_variable, step_seed


@register("rlw")
class RLW(Weighting):
    """Random loss weighting (Lin, Ye, Zhang and Tsang, "Reasonable Effectiveness of
    Random Weighting: A Litmus Test for Multi-Task Learning", TMLR 2022, Algorithm 2):
    at every step, weights softmax(z) with z ~ N(0, I_T), times T here so they average 1
    like equal weighting (the paper's, LibMTL's and TorchJD's sum to 1).

    The draw of step n (counted from 1, kept in the checkpoint) is
    `softmax(tf.random.stateless_normal([T], seed=(seed, n)))`: a resumed run draws
    what the uninterrupted one would have, and every replica draws the same weights.

    Args:
        seed: int. Seeds the stream of weights. Defaults to `0`.
    """

    def __init__(self, seed=0):
        super().__init__()
        self.seed = check_number("seed", seed, low=0, integer=True)

    def build(self, num_tasks):
        super().build(num_tasks)
        self.step = state_variable(1, dtype=tf.int64, name="step")
        return self

    def loss_weights(self, losses):
        z = tf.random.stateless_normal([self.num_tasks], seed=step_seed(self.seed, self.step))
        return self.num_tasks * tf.nn.softmax(z)

    def observe(self, losses):
        self.step.assign_add(1)

    def get_config(self):
        return {"seed": self.seed}
