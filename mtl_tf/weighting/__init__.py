"""Loss-weighting strategies, one per module, looked up with `get(name)`.

| name | kind | paper |
|---|---|---|
| fixed, equal | loss | - |
| stairs_t1, lin, lin_t1, exp_sigma | loss, by epoch | Belharbi et al. 2016 (paper 001) |
| uncertainty | loss, learned | Kendall et al. 2018 |
| dwa | loss, adaptive | Liu et al. 2019 |
| gradnorm | gradient norms, learned | Chen et al. 2018 |
| pcgrad | gradient | Yu et al. 2020 |
| mgda | gradient | Sener and Koltun 2018 |
| cagrad | gradient | Liu et al. 2021 |
"""

from mtl_tf.weighting import (  # noqa: F401 - each module registers its strategies
    cagrad,
    dwa,
    fixed,
    gradnorm,
    mgda,
    pcgrad,
    schedules,
    uncertainty,
)
from mtl_tf.weighting.base import Weighting, available, get, register
from mtl_tf.weighting.gradient_level import GradientLevel
