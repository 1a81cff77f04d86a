"""mtl_tf: the core of the multi-task model zoo for Keras and TensorFlow."""

__version__ = "0.1.0"

from mtl_tf._startup import import_tensorflow  # noqa: E402

import_tensorflow()

from mtl_tf import data  # noqa: E402

# So that `tfds.load("mtl_mnist")` works once the project is imported.
data.register_tfds_builders()

from mtl_tf.model import MultiTaskModel  # noqa: E402,F401 - Keras's compile/fit with any weighting
