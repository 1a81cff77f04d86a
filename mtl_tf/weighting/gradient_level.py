"""The shared base of gradient-level strategies (PCGrad, MGDA-UB, CAGrad).

Each receives the per-task gradients of the shared part as a T x D matrix (at the shared
representation, or at every shared weight with `mode="parameters"`) and returns one
gradient. The heads get their own tasks' unweighted gradients, as in LibMTL.
"""

from mtl_tf.weighting.base import Weighting


class GradientLevel(Weighting):
    weights_heads = False

    def __init__(self, mode="representation"):
        super().__init__()
        if mode not in ("representation", "parameters"):
            raise ValueError(f"`mode` must be 'representation' or 'parameters'. Received: mode={mode!r}")
        self.grad_mode = mode

    def get_config(self):
        return {"mode": self.grad_mode}
