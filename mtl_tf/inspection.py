"""What a mixing architecture learned: its gates' mean weights and its cross-stitch
coefficients, as log entries the trainer adds to every epoch (history, CSV, TensorBoard),
and a plot of them.

A *gate* is a layer named `gate...` whose output is one weight per expert (MMoE's,
OMoE's, CGC's and PLE's softmax gates, DSelect-k's); its entry `<gate>_expert_<i>` is
the mean weight of expert i over a fixed sample of the training inputs (for CGC and
PLE, i counts the task's own experts, then the shared ones, as the gate mixes them).
A cross-stitch unit `stitch_<j>` logs alpha as `stitch_<j>_<task>_from_<other>`.
"""

from pathlib import Path

import keras
import numpy as np


def is_entry(key):
    """Whether log entry `key` is one of `Inspection`'s (the progress bar leaves them out)."""
    return (key.startswith("gate") and "_expert_" in key) or (key.startswith("stitch_") and "_from_" in key)


class Inspection:
    """The gates and cross-stitch units of `model` (none: `active` is False)."""

    def __init__(self, model, task_names):
        self.model = model
        self.task_names = list(task_names)
        self.gates = [layer for layer in model.layers if layer.name.startswith("gate")
                      and len(layer.output.shape) == 2]
        self.stitches = [layer for layer in model.layers if hasattr(layer, "alpha")
                         and layer.name.startswith("stitch")]
        self.active = bool(self.gates or self.stitches)
        self._gates = keras.Model(model.input, [g.output for g in self.gates]) if self.gates else None

    def logs(self, sample):
        """The log entries on the inputs `sample`."""
        logs = {}
        if self._gates is not None:
            outputs = self._gates(sample, training=False)
            outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            for gate, weights in zip(self.gates, outputs):
                mean = np.asarray(weights).mean(axis=0)
                logs.update({f"{gate.name}_expert_{i}": float(v) for i, v in enumerate(mean)})
        for stitch in self.stitches:
            alpha = np.asarray(stitch.alpha)
            logs.update({f"{stitch.name}_{t}_from_{s}": float(alpha[i, j])
                         for i, t in enumerate(self.task_names) for j, s in enumerate(self.task_names)})
        return logs


def plot_gates(history, path):
    """One heat map per gate (epochs x experts, mean weight) and per cross-stitch unit
    (its last epoch's alpha) from a History's `history` dict or a run's history.csv;
    written to `path` (PNG)."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    if not isinstance(history, dict):
        with open(history, newline="") as f:
            rows = list(csv.DictReader(f))
        history = {key: [float(r[key]) for r in rows] for key in (rows[0] if rows else {})
                   if "_expert_" in key and not key.startswith("val_") or key.startswith("stitch_")}
    panels = {}
    for key in history:
        if "_expert_" in key:
            gate, index = key.rsplit("_expert_", 1)
            panels.setdefault(gate, {})[int(index)] = history[key]
        elif key.startswith("stitch_") and "_from_" in key:
            unit = "_".join(key.split("_")[:2])
            panels.setdefault(unit, {})[key[len(unit) + 1:]] = history[key]
    if not panels:
        raise ValueError("The history has no gate or cross-stitch entries (`<gate>_expert_<i>`, "
                         "`stitch_<j>_<task>_from_<task>`) to plot.")
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2), squeeze=False)
    for ax, (name, series) in zip(axes[0], panels.items()):
        if name.startswith("stitch_"):
            tasks = sorted({k.split("_from_")[0] for k in series})
            grid = np.array([[series[f"{t}_from_{s}"][-1] for s in tasks] for t in tasks])
            image = ax.imshow(grid, cmap="viridis")
            ax.set_xticks(range(len(tasks)), tasks, rotation=45)
            ax.set_yticks(range(len(tasks)), tasks)
            ax.set_title(f"{name} (alpha)")
        else:
            grid = np.array([series[i] for i in sorted(series)]).T  # epochs x experts
            image = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks(range(grid.shape[1]))
            ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
            ax.set_xlabel("expert")
            ax.set_ylabel("epoch")
            ax.set_title(name)
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
