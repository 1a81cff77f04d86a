"""Data sets for the multi-task zoo, loaded offline from files the registries provide.

Public API (stable): `load_numpy`, `load`, `safe_unpickle`, `pool`, `PooledData`,
`split_labelled`, `make_pairs`, `fashion_coarse_labels`, `FASHION_MNIST_COARSE`,
`fetch`, `info`, `data_dir`, `safe_extract`, and for coarse/fine label sets
`load_hierarchy`, `check_hierarchy`, `cifar100_names`, `HIERARCHIES`. See README.md, "Data".
"""

from mtl_tf.data.archives import safe_extract
from mtl_tf.data.helpers import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_COARSE,
    PooledData,
    fashion_coarse_labels,
    make_pairs,
    pool,
    split_labelled,
)
from mtl_tf.data.hierarchy import HIERARCHIES, check_hierarchy, cifar100_names, load_hierarchy
from mtl_tf.data.loaders import load_numpy, names
from mtl_tf.data.paths import data_dir
from mtl_tf.data.safe_pickle import UnsafePickleError, safe_unpickle
from mtl_tf.data.sources import SourceUnavailableError, fetch, info
from mtl_tf.data.tf_data import load


def register_tfds_builders():
    """Registers the `mtl_*` TFDS builders (imports tensorflow_datasets)."""
    from mtl_tf.data import tfds_builders  # noqa: F401 - registration on import
