"""Evolving-weight denoising auto-encoder stacks (Belharbi et al., ESANN 2016; paper 001).

An MLP NN_K whose every hidden layer is also the coding layer of a denoising auto-encoder
(DAE): the k-th DAE corrupts the clean output of layer k-1 (the input for k = 1), codes it
with the very Dense layer of the supervised net (the same variables), and decodes it with
a layer of its own (section 3.1: w_dae,k = {w_c,k, w_d,k}, the decoding weights not tied).
Training weighs the supervised task lambda_s(t) and every reconstruction lambda_r(t) =
1 - lambda_s(t) with `mtl_tf.weighting`'s schedules (`stairs_t1`, `lin`, `lin_t1`,
`exp_sigma`), alternating a reconstruction step and a supervised step per mini-batch
(Algorithm 1: `Trainer(..., update="alternating")`).

Where the paper is silent, the authors' public material fills in:
- tanh hidden units, weights uniform in +-sqrt(6 / (fan_in + fan_out)) and zero biases,
  sigmoid reconstructions trained with cross-entropy: the defaults of Crino
  (`jlerouge/crino`), whose "custom version" the paper ran;
- binomial masking corruption, x * Bernoulli(1 - p) (the first author's later code,
  `sbelharbi/structured-output-ae`, `da.py`); the level p is not published anywhere:
  `corruption` is an argument, chosen on validation data by the reproduction.
Ours, where nothing public says: the clean layer a DAE reconstructs is its target only
(no gradient flows into it, or the lower layers could shrink it to a constant); a tanh
layer's target is mapped to [0, 1] by (x + 1) / 2, so cross-entropy with a sigmoid
reconstruction stays a proper loss; gradients do flow through the corrupted input into
the lower layers (every coding weight is in w').

Outputs, a dict: `classes` (logits) and `reconstruction_k` for k = 1..K, each of shape
(batch, 2, width of layer k-1): the reconstruction's logits and its target, the form the
`reconstruction` task kind with `target="output"` reads. The serving signature a user
wants is `serving_classes`.
"""

import keras
import numpy as np
import tensorflow as tf

from mtl_tf.tasks import Task
from zoo.hard_sharing import _check_shape
from zoo.registry import register

ARCHITECTURES = {"nn1": (50,), "nn2": (60, 50), "nn3": (70, 60, 50), "nn4": (80, 70, 60, 50)}


@keras.saving.register_keras_serializable(package="mtl_tf")
class BinomialCorruption(keras.layers.Layer):
    """Masking noise: each value is zeroed with probability `rate` in training, and
    passed unchanged (not rescaled) at inference.

    The masks are stateless draws keyed by (seed, a call counter the layer keeps as a
    weight), so a checkpoint holds the noise stream too and a resumed run draws the masks
    an uninterrupted one would (Keras's own seed generators are not checkpointed).

    Args:
        rate: float in [0, 1). The fraction of values zeroed.
        seed: int or None. Seeds the masks; None draws one.
    """

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        check_corruption(rate)
        self.rate = float(rate)
        self.seed = int(np.random.default_rng().integers(2**31)) if seed is None else int(seed)
        self.calls = self.add_weight(shape=(), dtype="int64", initializer="zeros", trainable=False,
                                     name="calls")

    def call(self, inputs, training=False):
        if not training or self.rate == 0.0:
            return inputs
        self.calls.assign_add(1)
        seed = tf.stack([tf.constant(self.seed, tf.int64), tf.convert_to_tensor(self.calls)])
        keep = tf.random.stateless_uniform(tf.shape(inputs), seed=seed) >= self.rate
        return inputs * tf.cast(keep, inputs.dtype)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


def check_corruption(rate):
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
        raise ValueError(f"`corruption` must be a fraction in [0, 1). Received: corruption={rate!r}")
    return float(rate)


def tasks(model):
    """The tasks of an `evolving_dae` model: `classes` first (the schedules' main task),
    then one reconstruction per layer, whose targets the model computes."""
    outputs = model.output
    return [Task("classes", int(outputs["classes"].shape[-1]))] + [
        Task(name, int(outputs[name].shape[-1]), kind="reconstruction", target="output")
        for name in sorted((n for n in outputs if n.startswith("reconstruction_")),
                           key=lambda n: int(n.rsplit("_", 1)[1]))]


def groups(model):
    """Algorithm 1's groups: every reconstruction, then the supervised task."""
    return [[t.name for t in tasks(model)[1:]], ["classes"]]


@register("evolving_dae")
def evolving_dae(architecture="nn1", hidden=None, input_shape=(28, 28), num_classes=10,
                 corruption=0.2, seed=None, name=None):
    """NN_K with a denoising auto-encoder on every hidden layer (paper 001).

    Args:
        architecture: `"nn1"` (50), `"nn2"` (60, 50), `"nn3"` (70, 60, 50) or `"nn4"`
            (80, 70, 60, 50). Defaults to `"nn1"`.
        hidden: tuple of int. Hidden widths instead of a named architecture.
        input_shape: tuple of int. Flattened first. Defaults to `(28, 28)`.
        num_classes: int. Defaults to `10`.
        corruption: float in [0, 1). The masking level of every DAE. Defaults to `0.2`.
        seed: int or None. Seeds the corruption masks.
        name: str. Defaults to the architecture's name.

    Example:
    ```python
    import numpy as np
    import zoo
    model = zoo.build("evolving_dae", architecture="nn2")
    out = model(np.zeros((3, 28, 28), "float32"))
    assert out["classes"].shape == (3, 10)
    assert out["reconstruction_1"].shape == (3, 2, 784) and out["reconstruction_2"].shape == (3, 2, 60)
    ```
    """
    if hidden is None:
        if architecture not in ARCHITECTURES:
            from mtl_tf.names import unknown_name

            raise unknown_name("architecture", "architecture", architecture, ARCHITECTURES)
        hidden = ARCHITECTURES[architecture]
    hidden = tuple(hidden)
    if not hidden or not all(isinstance(h, int) and h > 0 for h in hidden):
        raise ValueError(f"`hidden` must be positive integers. Received: hidden={hidden!r}")
    check_corruption(corruption)
    input_shape = _check_shape(input_shape)
    init = keras.initializers.GlorotUniform  # Crino's uniform +-sqrt(6 / (fan_in + fan_out))

    inputs = keras.Input(input_shape, name="inputs")
    clean = keras.layers.Flatten()(inputs) if len(input_shape) > 1 else inputs
    outputs, layers = {}, []
    seeds = iter(range(10**6)) if seed is None else iter(range(seed, seed + 10**6))
    for k, width in enumerate(hidden, start=1):
        coder = keras.layers.Dense(width, activation="tanh", kernel_initializer=init(seed=next(seeds)),
                                   name=f"hidden_{k}")
        layers.append((coder, clean))
        clean = coder(clean)
    outputs["classes"] = keras.layers.Dense(num_classes, kernel_initializer=init(seed=next(seeds)),
                                            name="classes")(clean)
    for k, (coder, below) in enumerate(layers, start=1):
        corrupted = BinomialCorruption(corruption, seed=None if seed is None else seed + 1000 + k,
                                       name=f"corruption_{k}")(below)
        width = int(below.shape[-1])
        logits = keras.layers.Dense(width, kernel_initializer=init(seed=next(seeds)),
                                    name=f"decoder_{k}")(coder(corrupted))
        target = keras.ops.stop_gradient(below if k == 1 else (below + 1.0) / 2.0)
        outputs[f"reconstruction_{k}"] = keras.ops.stack([logits, target], axis=1)
    return keras.Model(inputs, outputs, name=name or (architecture if hidden == ARCHITECTURES.get(
        architecture) else "evolving_dae"))


for _name, _hidden in ARCHITECTURES.items():
    def _variant(_hidden=_hidden, _name=_name, **kwargs):
        return evolving_dae(hidden=_hidden, name=kwargs.pop("name", _name), **kwargs)

    _variant.__doc__ = f"`evolving_dae` with NN_{_name[-1]}'s hidden widths {_hidden}."
    register(f"evolving_dae_{_name}")(_variant)
