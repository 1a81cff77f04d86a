"""Weight initialisations that builders share."""

import math

import keras


def torch_uniform(fan_in):
    """PyTorch's default for `nn.Linear` and `nn.Conv2d`: kaiming_uniform(a=sqrt(5)) for
    the kernel and U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the bias, the same bound. The
    builders of papers whose code is PyTorch start as that code did."""
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)
