"""DSelect-k (Hazimeh, Zhao, Chowdhery, Sathiamoorthy, Chen, Mazumder, Hong and Chi,
"DSelect-k: Differentiable Selection in the Mixture of Experts with Applications to
Multi-Task Learning", NeurIPS 2021): MMoE with each task's softmax gate replaced by a
differentiable choice of k experts.

Each of the k selectors holds m = ceil(log2 E) logits z; expert j's weight under it is
r(z)_j = prod_b S(z_b) if bit b of j is 1, else 1 - S(z_b) (j's binary code, most
significant bit first), S the smooth step of width gamma:
S(t) = 0 for t <= -gamma/2, 1 for t >= gamma/2, else -2 t^3 / gamma^3 + 3 t / (2 gamma) + 1/2.
The gate is alpha = sum_i softmax(w)_i r(z_i). As S reaches 0 or 1 each selector picks
exactly one expert. Per-example gates (`gate="per_example"`, the default) compute z and w
from the input by dense layers; static ones (`"static"`) learn them as weights.

Facts from the authors' TensorFlow code (google-research `dselect_k_moe`): z starts
uniform in +-gamma/100, w in +-0.05; the regulariser lambda * sum_i H(r(z_i)) (entropy,
with 1e-6 inside the log) pushes the selectors to a single expert; when E is not a power
of two, sum_i 1 / sum_j r(z_i)_j keeps their weight on codes that name an expert (1e-6
is added to the sum here, which reaches 0 when a selector settles on a code of no expert;
the authors add nothing). Both are added to the loss in training only. The authors sum them over the examples; here they
are averaged, so a batch's size and the replicas' split do not change their weight (the
trainer divides model losses by the replicas). `entropy_weight` defaults to 1e-6, the
value of the authors' example and LibMTL's (the authors' layer has it off by default).
"""

import math

import keras
import numpy as np

from zoo.experts import ExpertMixture, Mixture, check_positive
from zoo.registry import register

GATES = ("per_example", "static")


def smooth_step(t, gamma):
    """The cubic smooth step S of width `gamma` (the paper's Eq. 2)."""
    inner = -2 * t ** 3 / gamma ** 3 + 3 * t / (2 * gamma) + 0.5
    return keras.ops.where(t <= -gamma / 2, 0.0, keras.ops.where(t >= gamma / 2, 1.0, inner))


@keras.saving.register_keras_serializable(package="mtl_tf")
class DSelectKGate(keras.layers.Layer):
    """The gate over `experts` experts, from k selectors. Called on the flattened input
    (`per_example`) or on anything with a batch axis (`static`, which ignores it);
    returns B x E weights that sum to 1 where every selector's weight does."""

    def __init__(self, experts, k, gamma=1.0, gate="per_example", entropy_weight=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.experts, self.k, self.gamma, self.gate, self.entropy_weight = experts, k, gamma, gate, entropy_weight
        self.bits = max(1, math.ceil(math.log2(experts)))
        codes = [[int(b) for b in np.binary_repr(j, width=self.bits)] for j in range(experts)]
        self.codes = np.array(codes, dtype="float32")  # E x m
        self.z_init = keras.initializers.RandomUniform(-gamma / 100, gamma / 100)
        self.w_init = keras.initializers.RandomUniform(-0.05, 0.05)
        if gate == "per_example":
            self.z_layer = keras.layers.Dense(k * self.bits, kernel_initializer=self.z_init,
                                              bias_initializer=self.z_init, name="z")
            self.w_layer = keras.layers.Dense(k, kernel_initializer=self.w_init, bias_initializer=self.w_init,
                                              name="w")

    def build(self, input_shape):
        if self.gate == "per_example":
            self.z_layer.build(input_shape)
            self.w_layer.build(input_shape)
        else:
            self.z_logits = self.add_weight(shape=(self.k, self.bits), initializer=self.z_init, name="z")
            self.w_logits = self.add_weight(shape=(self.k,), initializer=self.w_init, name="w")

    def call(self, x, training=None):
        batch = keras.ops.shape(x)[0]
        if self.gate == "per_example":
            z = keras.ops.reshape(self.z_layer(x), (batch, self.k, self.bits))
            w = self.w_layer(x)
        else:
            z = keras.ops.broadcast_to(self.z_logits[None], (batch, self.k, self.bits))
            w = keras.ops.broadcast_to(self.w_logits[None], (batch, self.k))
        s = smooth_step(z, self.gamma)[:, :, None, :]  # B x k x 1 x m
        codes = keras.ops.convert_to_tensor(self.codes)[None, None]  # 1 x 1 x E x m
        selectors = keras.ops.prod(codes * s + (1 - codes) * (1 - s), axis=-1)  # B x k x E
        mix = keras.ops.softmax(w, axis=-1) if self.k > 1 else keras.ops.ones_like(w)
        weights = keras.ops.sum(mix[:, :, None] * selectors, axis=1)
        if training:
            if self.entropy_weight:
                entropy = -keras.ops.sum(selectors * keras.ops.log(selectors + 1e-6), axis=(1, 2))
                self.add_loss(self.entropy_weight * keras.ops.mean(entropy))
            if self.experts != 2 ** self.bits:
                reach = keras.ops.sum(selectors, axis=-1) + 1e-6  # 0 once a selector picks no expert
                self.add_loss(keras.ops.mean(keras.ops.sum(1 / reach, axis=1)))
        return weights

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.experts)

    def get_config(self):
        return {**super().get_config(), "experts": self.experts, "k": self.k, "gamma": self.gamma,
                "gate": self.gate, "entropy_weight": self.entropy_weight}


@register("dselect_k")
def dselect_k(tasks, input_shape, experts=8, k=2, gamma=1.0, gate="per_example", entropy_weight=1e-6,
              expert=None, expert_filters=(16, 32), expert_units=(16,), tower_units=(8,), dropout=0.0,
              name="dselect_k"):
    """MMoE's experts and towers with a DSelect-k gate per task (layers `gate_<task>`).

    Args:
        tasks: dict of task name -> number of outputs, or a list of `mtl_tf.tasks.Task`.
        input_shape: tuple of int. A flat feature vector `(d,)` or an image.
        experts: int. Defaults to `8` (as `mmoe`).
        k: int, at most `experts`. Experts each gate selects. Defaults to `2` (DeepCTR's
            `n_select`).
        gamma: float > 0. The smooth step's width. Defaults to `1.0` (the authors').
        gate: `"per_example"` or `"static"`. Defaults to `"per_example"`.
        entropy_weight: float >= 0. Defaults to `1e-6`.
        expert, expert_filters, expert_units, tower_units, dropout, name: as `mmoe`'s.
    """
    check_positive("experts", experts)
    check_positive("k", k)
    if k > experts:
        raise ValueError(f"`k` must be at most `experts` ({experts}). Received: k={k}")
    if gate not in GATES:
        raise ValueError(f"`gate` must be one of {GATES}. Received: gate={gate!r}")
    for argument, value, low in (("gamma", gamma, 0.0), ("entropy_weight", entropy_weight, None)):
        bad = isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
        if bad or (value <= low if low is not None else value < 0):
            raise ValueError(f"`{argument}` must be a {'positive' if low is not None else 'non-negative'} "
                             f"number. Received: {argument}={value!r}")
    mixture = Mixture(tasks, input_shape, expert, expert_filters, expert_units, tower_units, dropout)
    inputs, flat = mixture.inputs()
    outs = mixture.experts(inputs, experts, "expert_")
    mixed = {t.name: ExpertMixture(name=f"mixture_{t.name}")(
        [DSelectKGate(experts, k, float(gamma), gate, float(entropy_weight), name=f"gate_{t.name}")(flat), *outs])
        for t in mixture.tasks}
    outputs = mixture.towers(mixed)
    return keras.Model(inputs, outputs, name=name)
