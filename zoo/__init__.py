"""zoo: Keras functional-API builders of multi-task models, looked up by name.

Every builder takes `tasks` and `input_shape` and returns a functional `keras.Model` whose
outputs are a dict keyed by task name. Families register themselves in this package's
modules, imported here, so `import zoo` sees every model.
"""

import mtl_tf  # noqa: F401 - first: a quiet TensorFlow start-up
from zoo import (  # noqa: F401 - register their models
    allconv, coarse_fine, cross_stitch, dselect_k, evolving_dae, hard_sharing, learning_to_branch, mmoe, mtan, multi_lenet, ple,
    selective_sharing, siamese)
from zoo.registry import build, get_builder, list_models, register
