"""CGC and PLE (Tang, Liu, Zhao and Gong, "Progressive Layered Extraction (PLE): A Novel
Multi-Task Learning (MTL) Model for Personalized Recommendations", RecSys 2020).

Customized Gate Control: shared experts and each task's own experts; task k's gate
mixes its own and the shared ones, g^k(x) = softmax(W_k x) . [E_k(x), E_s(x)], and its
tower reads the mixture. PLE stacks CGC levels: at every level but the last a shared
gate mixes every expert of the level into the shared stream, which the next level's
shared experts and gates read, while task k's stream feeds its own experts and gate.
Facts from DeepCTR's `ple.py`, which follows the paper: the order [own experts, shared
experts] in a task's gate, every task's experts then the shared ones in the shared
gate, gates without bias on their stream, and the defaults of one shared and one own
expert per task and two levels. LibMTL's PLE has no shared gate (a departure from the
paper). Widths default to the `mmoe` family's, so the two compare at equal sizes.
"""

import keras

from zoo.experts import ExpertMixture, Mixture, check_positive, gate
from zoo.registry import register


def _build(tasks, input_shape, levels, shared_experts, task_experts, expert, expert_filters, expert_units,
           tower_units, dropout, name):
    for argument, value in (("levels", levels), ("shared_experts", shared_experts), ("task_experts", task_experts)):
        check_positive(argument, value)
    mixture = Mixture(tasks, input_shape, expert, expert_filters, expert_units, tower_units, dropout)
    inputs, flat = mixture.inputs()
    names = [t.name for t in mixture.tasks]
    streams = {key: (inputs, flat) for key in names + ["shared"]}  # (expert input, gate input)
    for level in range(levels):
        own = {t: mixture.experts(streams[t][0], task_experts, f"expert_{level}_{t}_", level) for t in names}
        common = mixture.experts(streams["shared"][0], shared_experts, f"expert_{level}_shared_", level)
        mixed = {}
        for t in names:
            chosen = own[t] + common
            mixed[t] = ExpertMixture(name=f"mixture_{level}_{t}")(
                [gate(streams[t][1], len(chosen), f"gate_{level}_{t}"), *chosen])
        if level < levels - 1:
            chosen = [e for t in names for e in own[t]] + common
            mixed["shared"] = ExpertMixture(name=f"mixture_{level}_shared")(
                [gate(streams["shared"][1], len(chosen), f"gate_{level}_shared"), *chosen])
        streams = {key: (value, value) for key, value in mixed.items()}
    return keras.Model(inputs, mixture.towers({t: streams[t][0] for t in names}), name=name)


@register("cgc")
def cgc(tasks, input_shape, shared_experts=1, task_experts=1, expert=None, expert_filters=(16, 32),
        expert_units=(16,), tower_units=(8,), dropout=0.0, name="cgc"):
    """Customized Gate Control: one level of shared and task experts, a gate and a
    tower per task. Outputs are a dict keyed by task name (logits); task k's gate is the
    layer `gate_0_<k>`, its experts `expert_0_<k>_<i>`, the shared ones
    `expert_0_shared_<i>`.

    Args:
        tasks: dict of task name -> number of outputs, or a list of `mtl_tf.tasks.Task`.
        input_shape: tuple of int. A flat feature vector `(d,)` or an image.
        shared_experts: int. Defaults to `1` (DeepCTR's).
        task_experts: int. Each task's own experts. Defaults to `1` (DeepCTR's).
        expert: `"dense"` or, for images, `"conv"`. Defaults to `"conv"` for images.
        expert_filters: tuple of int. A conv expert's blocks. Defaults to `(16, 32)`.
        expert_units: tuple of int. Each expert's dense layers. Defaults to `(16,)`.
        tower_units: tuple of int. Each tower's hidden layers. Defaults to `(8,)`.
        dropout: float. Before each tower's output layer. Defaults to `0.0`.
        name: str. Defaults to `"cgc"`.
    """
    return _build(tasks, input_shape, 1, shared_experts, task_experts, expert, expert_filters, expert_units,
                  tower_units, dropout, name)


@register("ple")
def ple(tasks, input_shape, levels=2, shared_experts=1, task_experts=1, expert=None, expert_filters=(16, 32),
        expert_units=(16,), tower_units=(8,), dropout=0.0, name="ple"):
    """Progressive Layered Extraction: `levels` CGC levels, with a shared gate at every
    level but the last (layers `gate_<level>_shared`). Arguments as `cgc`'s, and
    `levels` (int, defaults to `2`, DeepCTR's). Levels after the first have dense
    experts on the previous level's mixtures."""
    return _build(tasks, input_shape, levels, shared_experts, task_experts, expert, expert_filters, expert_units,
                  tower_units, dropout, name)
