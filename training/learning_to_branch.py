"""Learning to Branch's search schedule (Guo, Lee and Ulbricht, ICML 2020), as a callback
of the Trainer or of Keras's `fit`: a warm-up, then the annealed search.

For the first `warmup` epochs the branching logits get no gradient, so every step trains
a tree drawn uniformly (every node's weights learn before any choice is made;
KamalEngine's re-implementation holds the branching's learning rate at 0 for its first
2 epochs, LibMTL for the first 1% of the epochs). Then the logits learn, at the
temperature tau_e = tau_0 / (e - warmup + 1) at search epoch e - warmup: the 1/epoch
decay both KamalEngine (tau_0 = 10) and Ayotte's re-implementation anneal by; LibMTL
decays as 1/sqrt(epoch). The temperature is set from the epoch number at every epoch's
start, so a resumed run anneals on where it stopped.

Every epoch logs `temperature` and `branch_nodes` (the nodes the most probable tree
uses, out of the search network's), and prints the most probable tree whenever it
changes; `tree` is the last one, for `learning_to_branch(..., tree=search.tree)`.
"""

import keras

from zoo.learning_to_branch import branch_units, tree_of


class BranchSearch(keras.callbacks.Callback):
    """Anneals a Learning to Branch search network's units (`zoo.learning_to_branch`).

    Args:
        warmup: int >= 0. Epochs of uniform sampling before the logits learn. Defaults to `2`.
        temperature: float > 0. tau_0, the first search epoch's temperature. Defaults to `10.0`.
        verbose: bool. Print the tree when it changes. Defaults to `True`.
    """

    def __init__(self, warmup=2, temperature=10.0, verbose=True):
        super().__init__()
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"`warmup` must be an integer >= 0. Received: warmup={warmup!r}")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ValueError(f"`temperature` must be a positive number. Received: temperature={temperature!r}")
        self.warmup, self.initial_temperature, self.verbose = warmup, float(temperature), verbose
        self.tree = None

    def temperature(self, epoch):
        """The temperature of `epoch` (0-based)."""
        return self.initial_temperature / max(1, epoch - self.warmup + 1)

    def _units(self):
        units = branch_units(self.model)
        if not units:
            raise ValueError(f"BranchSearch needs a Learning to Branch search network (GumbelBranch units); "
                             f"model {self.model.name!r} has none.")
        return units

    def on_epoch_begin(self, epoch, logs=None):
        for unit in self._units():
            unit.temperature.assign(self.temperature(epoch))
            unit.searching.assign(float(epoch >= self.warmup))

    def on_epoch_end(self, epoch, logs=None):
        tree = tree_of(self.model)
        if logs is not None:
            logs["temperature"] = self.temperature(epoch)
            logs["branch_nodes"] = float(len({(i, path[: i + 1]) for path in tree.values()
                                              for i in range(len(path))}))
        if tree != self.tree and self.verbose:
            print(f"Epoch {epoch + 1}: most probable tree {format_tree(tree)}")
        self.tree = tree


def format_tree(tree):
    """The tree as groups per layer, e.g. `[a b c] | [a b] [c] | [a] [b] [c]`."""
    depth = len(next(iter(tree.values())))
    layers = []
    for i in range(depth):
        groups = {}
        for task, path in tree.items():
            groups.setdefault(path[: i + 1], []).append(task)
        layers.append(" ".join(f"[{' '.join(g)}]" for g in groups.values()))
    return " | ".join(layers)
