"""training: the Trainer (tf.GradientTape, per-task gradients, dynamic loss weights),
recipes, and the `mtl-tf` command line."""

import mtl_tf  # noqa: F401 - first: a quiet TensorFlow start-up
from training.trainer import Trainer, fit
