"""Loss-weighting and gradient-combination strategies, one per module, looked up with
`get(name)`; `available()` lists them.

Kinds: *loss* strategies weight or transform the task losses (one backward pass);
*Gram* strategies combine the task gradients through their T x T Gram matrix only, which
one T x T all-reduce makes exact under several replicas, at the shared representation
(`mode="representation"`, about one extra backward pass) or at every shared weight
(`mode="parameters"`, one trunk backward per task).

| name | kind | paper | extra cost per step | state |
|---|---|---|---|---|
| equal, fixed | loss | - | - | - |
| stairs_t1, lin, lin_t1, exp_sigma | loss, by epoch | Belharbi et al. 2016 | - | - |
| uncertainty | loss, learned | Kendall et al. 2018 | - | log variances |
| dwa | loss | Liu et al. 2019 | - | epoch losses |
| gls | loss | Chennupati et al. 2019 | - | - |
| rlw | loss, random | Lin et al. 2022 | - | step (the stream) |
| scale_invariant | loss | Navon et al. 2022 (SI) | - | - |
| stch | loss, by epoch | Lin et al. 2024 | - | nadir point |
| imtl_l | loss, learned | Liu et al. 2021 | - | loss scales |
| famo | loss | Liu et al. 2023 | one forward pass | logits, Adam moments |
| gradnorm | Gram, learned | Chen et al. 2018 | per-task gradients | weights |
| pcgrad | Gram | Yu et al. 2020 | per-task gradients | step (the order) |
| mgda | Gram | Sener and Koltun 2018 | per-task gradients | - |
| cagrad | Gram | Liu et al. 2021 | per-task gradients | - |
| imtl_g, imtl | Gram (imtl: + learned scales) | Liu et al. 2021 | per-task gradients | imtl: loss scales |
| aligned_mtl | Gram | Senushkin et al. 2023 | per-task gradients | - |
| upgrad, dualproj | Gram | Quinton and Rey 2024 | per-task gradients | - |
| nash_mtl | Gram | Navon et al. 2022 | per-task gradients | - |
| fairgrad | Gram | Ban and Ji 2024 | per-task gradients | - |
| config | Gram | Liu et al. 2025 | per-task gradients | - |
| gradvac | Gram | Wang et al. 2021 | per-task gradients | targets, step |
| krum | Gram, T >= 3 | Blanchard et al. 2017 | per-task gradients | - |
| pcd | Gram, task 0 first | Varam and AlHajri 2026 | per-task gradients | norms' average, step |
| cr_mogm | Gram (around another) | Zhou et al. 2022 | the base's | averaged weights, the base's |
| db_mtl | per-task gradients | Lin et al. 2023 | T x P moving averages | averages, step |
| moco | per-task gradients | Fernando et al. 2023 | T x P tracked gradients | tracked, weights |
| excess_mtl | per-task gradients | He et al. 2024 | T x P squared sums | sums, weights |
| graddrop | per-task gradients | Chen et al. 2020 | sign masks | step (the draw) |
| trimmed_mean | per-task gradients, T >= 3 | Yin et al. 2018 | a sort of T x P | - |
| modo | several batches | Chen et al. 2023 | 3 T trunk backward passes | weights |
| sdmgrad | several batches | Xiao et al. 2023 | 3 T trunk backward passes | weights |

*Per-task gradients* strategies need the T x P gradients of the shared weights
themselves (`mode="parameters"` only); *several batches* ones those of three parts of the
batch (`several_batches`).

Every strategy is exact under several replicas: loss strategies see the global batch's
losses, Gram strategies the global Gram matrix, per-task gradients strategies the
all-reduced gradients.
"""

from mtl_tf.weighting import (  # noqa: F401 - each module registers its strategies
    aligned_mtl,
    cagrad,
    conflict_free,
    cr_mogm,
    db_mtl,
    dwa,
    excess_mtl,
    fairgrad,
    famo,
    fixed,
    gls,
    graddrop,
    gradnorm,
    gradvac,
    imtl,
    krum,
    mgda,
    moco,
    modo,
    nash_mtl,
    pcd,
    pcgrad,
    rlw,
    scale_invariant,
    schedules,
    sdmgrad,
    stch,
    trimmed_mean,
    uncertainty,
    upgrad,
)
from mtl_tf.weighting.base import Weighting, available, get, register, strategy_class
from mtl_tf.weighting.gradient_level import GradientLevel
