"""What `make demo` shows of the data: split sizes, class counts, a grid of samples."""

import numpy as np

from mtl_tf.data.letters import LETTERS
from mtl_tf.data.loaders import load_numpy, splits

DEMO_SETS = ("mnist", "fashion_mnist", "letters", "mnist_pairs")


def split_table(names=DEMO_SETS):
    """Rows (data set, split, size, class counts) for every split of `names`."""
    rows = []
    for name in names:
        for split in splits(name):
            _, labels = load_numpy(name, split)
            label = labels["compare"] if isinstance(labels, dict) else labels
            rows.append((name, split, len(label), np.bincount(label).tolist()))
    return rows


def format_table(rows):
    lines = [f"{'data set':<14} {'split':<9} {'size':>6}  class counts"]
    lines += [f"{n:<14} {s:<9} {size:>6}  {' '.join(map(str, c))}" for n, s, size, c in rows]
    return "\n".join(lines)


def sample_grid(path, names=DEMO_SETS, per_set=16, seed=0):
    """Writes a PNG grid: one row of `per_set` test samples per data set, labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(len(names), per_set, figsize=(per_set * 0.8, len(names) * 1.0))
    for row, name in enumerate(names):
        images, labels = load_numpy(name, "test")
        for col, i in enumerate(rng.choice(len(images), per_set, replace=False)):
            ax = axes[row, col]
            image = images[i]
            if name == "mnist_pairs":
                image = np.concatenate([image[0], image[1]], axis=1)
                title = f"{labels['digit_a'][i]}{'<=' if labels['compare'][i] else '>'}{labels['digit_b'][i]}"
            elif name == "letters":
                title = LETTERS[labels[i]]
            else:
                title = str(labels[i])
            ax.imshow(image, cmap="gray")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=7)
        axes[row, 0].set_ylabel(name, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
