"""training: the Trainer (tf.GradientTape, per-task gradients, dynamic loss weights),
recipes, and the `mtl-tf` command line."""

from training.trainer import Trainer, fit
