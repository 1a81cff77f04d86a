"""Plots of training runs."""

from pathlib import Path


def plot_history(history, task_names, path, title=None):
    """Writes a PNG with per-task loss, per-task metric (train and validation when
    present) and the loss weights, one panel each, against the epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = range(1, len(history["loss"]) + 1)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for task in task_names:
        metric = next((k for k in history if k.startswith(f"{task}_") and k != f"{task}_loss"), None)
        for ax, key in ((axes[0], f"{task}_loss"), (axes[1], metric)):
            if key in history:
                (line,) = ax.plot(epochs, history[key], label=f"{task} train")
                if f"val_{key}" in history:
                    ax.plot(epochs, history[f"val_{key}"], "--", color=line.get_color(),
                            label=f"{task} val")
        if f"weight_{task}" in history:
            axes[2].plot(epochs, history[f"weight_{task}"], label=task)
    for ax, label in zip(axes, ("loss", "metric", "loss weight")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
