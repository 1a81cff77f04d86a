"""One-command reproductions of the papers' tables (`mtl-tf reproduce NAME`).

Each module has `PROFILES` and `reproduce(profile, out, runs=None, seed=0, log=print)`;
the contract they follow is `../shared/REPRODUCTION.md` in the workspace and the README.
"""

import importlib

from mtl_tf.names import unknown_name

# Names the common contract gives; the other families are added with their issues.
REPRODUCTIONS = {"allconv": "training.reproduce.allconv", "siamese": "training.reproduce.siamese",
                 "selective_sharing": "training.reproduce.selective_sharing",
                 "evolving_dae": "training.reproduce.evolving_dae",
                 "coarse_fine": "training.reproduce.coarse_fine", "mmoe": "training.reproduce.mmoe",
                 "multi_mnist": "training.reproduce.multi_mnist"}


def get(name):
    """The reproduction module called `name`."""
    if name not in REPRODUCTIONS:
        raise unknown_name("reproduction", "name", name, REPRODUCTIONS)
    return importlib.import_module(REPRODUCTIONS[name])
