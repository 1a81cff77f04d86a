"""MMoE and OMoE (Ma, Zhao, Yi, Chen, Hong and Chi, "Modeling Task Relationships in
Multi-task Learning with Multi-gate Mixture-of-Experts", KDD 2018).

E experts f_i read the input; task k's tower reads f^k(x) = sum_i g^k(x)_i f_i(x), with
its own gate g^k(x) = softmax(W_k x) (MMoE), or one gate for every task (OMoE, the
paper's one-gate baseline). Facts from the paper: experts are identical ReLU MLPs, the
gate is linear in the raw input and has no bias (LibMTL's has one), one tower per task.
The paper's synthetic experiment uses 8 experts of one 16-unit layer and towers of one
8-unit layer: the defaults here for flat inputs. DeepCTR's defaults (3 experts of
(256, 128), towers of (64,)) are for click logs; both seed every expert alike, which
starts them equal: each expert here draws its own initial weights.
"""

import keras

from zoo.experts import ExpertMixture, Mixture, check_positive, gate
from zoo.registry import register


def _build(tasks, input_shape, experts, expert, expert_filters, expert_units, tower_units, dropout,
           one_gate, name):
    check_positive("experts", experts)
    mixture = Mixture(tasks, input_shape, expert, expert_filters, expert_units, tower_units, dropout)
    inputs, flat = mixture.inputs()
    outs = mixture.experts(inputs, experts, "expert_")
    # OMoE's one mixture is shared: the graph cut is its output, not the experts'.
    shared = ExpertMixture(name="mixture")([gate(flat, experts, "gate"), *outs]) if one_gate else None
    mixed = {t.name: shared if one_gate else ExpertMixture(name=f"mixture_{t.name}")(
        [gate(flat, experts, f"gate_{t.name}"), *outs]) for t in mixture.tasks}
    return keras.Model(inputs, mixture.towers(mixed), name=name)


@register("mmoe")
def mmoe(tasks, input_shape, experts=8, expert=None, expert_filters=(16, 32), expert_units=(16,),
         tower_units=(8,), dropout=0.0, name="mmoe"):
    """Multi-gate Mixture-of-Experts: shared experts, one softmax gate and one tower per
    task. Outputs are a dict keyed by task name (logits); the gates are the layers
    `gate_<task>`, the experts `expert_<i>`, the towers `tower_<task>`.

    Args:
        tasks: dict of task name -> number of outputs, or a list of `mtl_tf.tasks.Task`.
        input_shape: tuple of int. A flat feature vector `(d,)` or an image.
        experts: int. Defaults to `8` (the paper's synthetic experiment).
        expert: `"dense"` or, for images, `"conv"` (conv blocks before the dense layers).
            Defaults to `"conv"` for images, `"dense"` otherwise.
        expert_filters: tuple of int. A conv expert's blocks. Defaults to `(16, 32)`.
        expert_units: tuple of int. Each expert's dense layers. Defaults to `(16,)`.
        tower_units: tuple of int. Each tower's hidden layers. Defaults to `(8,)`.
        dropout: float. Before each tower's output layer. Defaults to `0.0`.
        name: str. Defaults to `"mmoe"`.

    Example:
    ```python
    import numpy as np
    import zoo
    model = zoo.build("mmoe", tasks={"a": 1, "b": 1}, input_shape=(100,))
    assert model(np.zeros((2, 100), "float32"))["a"].shape == (2, 1)
    ```
    """
    return _build(tasks, input_shape, experts, expert, expert_filters, expert_units, tower_units, dropout,
                  one_gate=False, name=name)


@register("omoe")
def omoe(tasks, input_shape, experts=8, expert=None, expert_filters=(16, 32), expert_units=(16,),
         tower_units=(8,), dropout=0.0, name="omoe"):
    """One-gate Mixture-of-Experts (the MMoE paper's baseline): as `mmoe`, with one gate
    `gate` whose mixture every tower reads."""
    return _build(tasks, input_shape, experts, expert, expert_filters, expert_units, tower_units, dropout,
                  one_gate=True, name=name)
