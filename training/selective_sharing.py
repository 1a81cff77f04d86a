"""Selective Sharing's grouping (paper 002, sections 3.1-3.4), as a callback of the Trainer.

Each epoch the Trainer sums every task's gradient of its branch point's kernel (the first
Dense layer of its branch, 640 x 100 on MNIST) out of the training step's own backward
pass (`Trainer.capture_branch_gradients`). At the epoch's end:

1. **Decomposition** (section 3.2), with tensorly's `tensor_train`: each task's summed
   gradient matrix I x D is reshaped into a higher-order tensor by splitting I and D into
   small factors (640 x 100 -> 10 x 8 x 8 x 10 x 10, `tt_shape`), so the train has one
   core per factor instead of the two of a matrix SVD, and decomposed with TT-rank `rank`
   (default 5, the paper gives none: on MNIST's 640 x 100 kernel the five cores hold 750
   numbers per task instead of 64,000, and TT-SVD keeps the largest components). SVD leaves each rank component's sign free, which would put two tasks
   with the same gradient far apart: every core's components are signed so their
   largest entry is positive (the next core takes the sign back; the train is
   unchanged). Each core is divided by its norm (so a point ignores the gradient's
   scale, like a cosine), and the cores are flattened and stacked: the task's point.
2. **Clustering** (section 3.3) with the `hdbscan` package: `min_cluster_size=2` (a group
   is two tasks or more), `min_samples=1` (a task's core distance is the distance to its
   nearest other task, so two tasks with equal gradients always cluster; with HDBSCAN's
   default of 2, ten points rarely form any cluster) and excess-of-mass selection; all
   tasks in one cluster is not a result (that would be hard sharing, which the paper's
   stop rule is there to prevent), so HDBSCAN's `allow_single_cluster` stays off. The
   paper names the criteria but not their rules, and says groups form by "conditional
   statements on distances between clusters"; ours: a cluster HDBSCAN proposes is kept
   only if it is separated, every distance inside it shorter than any from a member to a
   task outside it (without that, HDBSCAN on ten points proposes clusters every epoch and
   the merges chain into one branch, hard sharing).
   - `similarity`: the separated HDBSCAN clusters of the points (Euclidean): close tasks
     share.
   - `dissimilarity`: the same on the inverted distances (max d - d, precomputed): tasks
     whose gradients are far apart share.
   - `variance`: the similarity clusters, then each task HDBSCAN left alone joins the
     cluster whose centroid is nearest (the assignment that keeps the most variance
     between clusters), so clusters are as large as possible (the paper: "favors large
     task clusters").
   - `random` (the control): clusters of the same sizes as similarity's, members drawn
     by a generator seeded with (seed, epoch).
   HDBSCAN finding no cluster is a normal outcome: no merge that epoch.
3. **Merging** (section 3.4): tasks clustered together share a branch, and so do the
   tasks already sharing a branch with any of them. The merged branch keeps the weights
   of the old branch with the lowest aggregated loss (the mean of its tasks' epoch
   training losses); every task keeps its own output layer; the trunk and the surviving
   weights keep their optimizer state (`Trainer.replace_model`).
4. **Lock**: grouping stops when every task shares its branch with another, or after
   `patience` (3) clustering epochs without a change; capture stops with it.

Every epoch logs `branches`, `params` and the seconds spent reading the sums, decomposing
and clustering (the capture inside the training step has no clock of its own:
`benchmarks/selective_sharing.py` measures it against a plain epoch); each regrouping
(epoch, groups, parameters, seconds) is printed, written to TensorBoard as text and kept
in `rows` (and `selective_sharing.json`). With a
`run_dir`, `selective_sharing.json` records every clustering epoch before that epoch's
checkpoint, so a run killed and started again rebuilds the grouping of the checkpoint it
resumes from.
"""

import json
import time
from pathlib import Path

import hdbscan
import keras
import numpy as np
import tensorflow as tf
import tensorly as tl
from tensorly.decomposition import tensor_train

from mtl_tf.data.paths import atomic_write_bytes
from mtl_tf.names import unknown_name
from zoo.selective_sharing import groups_of, normalize_groups, regroup

CRITERIA = ("similarity", "dissimilarity", "variance", "random")
DEFAULT_RANK = 5
STATE_FILE = "selective_sharing.json"


# === Decomposition ============================================================================
def tt_shape(rows, cols, largest=10):
    """`rows` and `cols` each split into factors of at most `largest` (greedily, the largest
    divisor first; a prime above `largest` stays whole): the tensor a gradient matrix is
    reshaped to."""
    def split(n):
        factors = []
        while n > 1:
            divisor = next((d for d in range(min(largest, n), 1, -1) if n % d == 0), n)
            factors.append(divisor)
            n //= divisor
        return factors or [1]

    return tuple(split(rows) + split(cols))


def max_tt_ranks(shape):
    """The largest TT-rank each bond of a tensor of `shape` allows."""
    sizes = np.array(shape)
    return [int(min(np.prod(sizes[: k + 1]), np.prod(sizes[k + 1:]))) for k in range(len(shape) - 1)]


def check_rank(rank, shape):
    """Refuses a TT-rank larger than the tensor allows at every bond."""
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
        raise ValueError(f"`rank` must be a positive integer. Received: rank={rank!r}")
    limit = max(max_tt_ranks(shape))
    if rank > limit:
        raise ValueError(f"`rank` {rank} is larger than a tensor of shape {tuple(shape)} allows "
                         f"(at most {limit} at its widest bond). Received: rank={rank!r}")


def tt_cores(gradient, rank=None, shape=None):
    """The TT cores of `gradient` reshaped to `shape` (default `tt_shape`), each bond's
    components signed so their largest entry in the core before it is positive. `rank`
    defaults to `DEFAULT_RANK`, or less where the tensor allows less."""
    gradient = np.asarray(gradient, np.float64)
    shape = tuple(shape or tt_shape(*gradient.shape))
    rank = min(DEFAULT_RANK, max(max_tt_ranks(shape))) if rank is None else rank
    check_rank(rank, shape)
    ranks = [1] + [min(rank, r) for r in max_tt_ranks(shape)] + [1]
    cores = [np.array(c) for c in tensor_train(tl.tensor(gradient.reshape(shape)), rank=ranks)]
    for k in range(len(cores) - 1):
        core = cores[k].reshape(-1, cores[k].shape[-1])
        signs = np.sign(core[np.argmax(np.abs(core), axis=0), np.arange(core.shape[1])])
        signs[signs == 0] = 1.0
        cores[k] = cores[k] * signs
        cores[k + 1] = cores[k + 1] * signs[:, None, None]
    return cores


def tt_point(gradient, rank=None, shape=None):
    """One task's point: its TT cores (`tt_cores`), each divided by its norm, flattened
    and stacked."""
    cores = tt_cores(gradient, rank, shape)
    return np.concatenate([(c / (np.linalg.norm(c) or 1.0)).ravel() for c in cores])


def tt_points(gradients, rank=None, shape=None):
    """T x I x D gradients -> T points (rows). All tasks' points have the same length,
    since their tensors have the same shape and ranks."""
    return np.stack([tt_point(g, rank, shape) for g in np.asarray(gradients)])


# === Clustering ===============================================================================
def _hdbscan(data, min_samples, metric="euclidean"):
    return hdbscan.HDBSCAN(min_cluster_size=2, min_samples=min_samples, metric=metric).fit_predict(data)


def _separated(labels, distances):
    """`labels` with every cluster that is not separated (some distance inside it as long
    as one from a member to a point outside) turned into noise."""
    labels = np.array(labels)
    for k in set(labels.tolist()) - {-1}:
        inside, outside = labels == k, labels != k
        if outside.any() and distances[np.ix_(inside, inside)].max() >= distances[np.ix_(inside, outside)].min():
            labels[inside] = -1
    return labels


def _clusters(labels, names):
    found = {}
    for label, name in zip(labels, names):
        if label >= 0:
            found.setdefault(int(label), []).append(name)
    return list(found.values())


def cluster_tasks(points, names, criterion="similarity", seed=0, epoch=0, min_samples=1):
    """Groups of task `names` whose `points` (one row per task) `criterion` puts together
    (module docstring); tasks in no group are left out. Deterministic for a given seed
    and epoch."""
    if criterion not in CRITERIA:
        raise unknown_name("sharing criterion", "criterion", criterion, CRITERIA)
    points = np.asarray(points, np.float64)
    names = list(names)
    if len(names) < 3:  # HDBSCAN needs more points than its smallest cluster
        return []
    distances = np.linalg.norm(points[:, None] - points[None], axis=-1)
    if criterion == "dissimilarity":
        inverted = distances.max() - distances
        np.fill_diagonal(inverted, 0.0)
        return _clusters(_separated(_hdbscan(inverted, min_samples, metric="precomputed"), inverted),
                         names)
    labels = _separated(_hdbscan(points, min_samples), distances)
    clusters = _clusters(labels, names)
    if criterion == "variance" and clusters:
        centroids = np.stack([points[[names.index(n) for n in c]].mean(axis=0) for c in clusters])
        grouped = {n for c in clusters for n in c}
        for i, name in enumerate(names):
            if name not in grouped:
                nearest = int(np.argmin(np.linalg.norm(centroids - points[i], axis=1)))
                clusters[nearest].append(name)
        clusters = [sorted(c, key=names.index) for c in clusters]
    elif criterion == "random" and clusters:
        rng = np.random.default_rng([seed, epoch])
        order = [names[i] for i in rng.permutation(len(names))]
        drawn = []
        for size in (len(c) for c in clusters):
            drawn.append(sorted(order[:size], key=names.index))
            order = order[size:]
        clusters = drawn
    return clusters


def join(groups, clusters, names):
    """The coarsest grouping that keeps `groups` and puts each cluster in one group."""
    owner = {n: i for i, g in enumerate(groups) for n in g}
    parent = list(range(len(groups)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for cluster in clusters:
        roots = [find(owner[n]) for n in cluster]
        for r in roots[1:]:
            parent[r] = roots[0]
    merged = {}
    for i, group in enumerate(groups):
        merged.setdefault(find(i), []).extend(group)
    return normalize_groups(list(merged.values()), names)


def groups_at_checkpoint(run_dir, epoch):
    """The grouping a Selective Sharing run in `run_dir` had after `epoch` epochs (its
    checkpoint of that epoch was written from it), or None before any merge."""
    path = Path(run_dir) / STATE_FILE
    if not path.is_file():
        return None
    state = json.loads(path.read_text())
    rows = [r for r in state["rows"] if r["epoch"] <= epoch]
    return rows[-1]["groups"] if rows else state["initial_groups"]


# === The callback =============================================================================
class SelectiveSharing(keras.callbacks.Callback):
    """Groups tasks into shared branches while a `training.Trainer` trains a
    `selective_sharing` model (module docstring for the rules).

    Args:
        criterion: `"similarity"`, `"dissimilarity"`, `"variance"` or `"random"`.
            Defaults to `"similarity"`.
        rank: int or None. The TT-rank of the gradient decomposition. Defaults to `None`:
            `DEFAULT_RANK` (5), or less where the branch point's tensor allows less.
        min_samples: int. HDBSCAN's `min_samples`. Defaults to `1`.
        patience: int. Clustering epochs without a change before grouping locks.
            Defaults to `3` (the paper's choice).
        start_epoch: int. The first epoch (1-based) at whose end tasks are clustered.
            Defaults to `1`.
        seed: int. Seeds the `random` criterion. Defaults to `0`.
        verbose: bool. Print each regrouping. Defaults to `True`.

    Example:
    ```python
    import numpy as np
    import zoo
    from training import Trainer
    from training.selective_sharing import SelectiveSharing
    from zoo.selective_sharing import one_vs_all_tasks
    tasks = one_vs_all_tasks(["a", "b", "c"])
    model = zoo.build("selective_sharing", tasks=tasks, input_shape=(6,), trunk="dense",
                      shared_units=8, branch_units=(4, 4))
    x = np.random.default_rng(0).normal(size=(64, 6)).astype("float32")
    y = {n: (x[:, i] > 0).astype("int64") for i, n in enumerate("abc")}
    callback = SelectiveSharing(verbose=False)
    Trainer(model, tasks=tasks).fit(x, y, epochs=2, batch_size=16, callbacks=[callback], verbose=0)
    assert callback.rows[0]["epoch"] == 1 and callback.rows[0]["criterion"] == "similarity"
    ```
    """

    def __init__(self, criterion="similarity", rank=None, min_samples=1, patience=3, start_epoch=1,
                 seed=0, verbose=True):
        super().__init__()
        if criterion not in CRITERIA:
            raise unknown_name("sharing criterion", "criterion", criterion, CRITERIA)
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
            raise ValueError(f"`rank` must be a positive integer or None. Received: rank={rank!r}")
        for key, value in (("patience", patience), ("start_epoch", start_epoch),
                           ("min_samples", min_samples)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{key}` must be a positive integer. Received: {key}={value!r}")
        self.criterion, self.rank, self.patience = criterion, rank, patience
        self.min_samples = min_samples
        self.start_epoch, self.seed, self.verbose = start_epoch, seed, verbose
        self.trainer = None
        self.initial_groups = None
        self.rows = []  # one per clustering epoch

    # --- state -------------------------------------------------------------------------
    @property
    def locked(self):
        return any(r["locked"] for r in self.rows)

    @property
    def lock_epoch(self):
        """The epoch (1-based) at whose end grouping locked, or None."""
        return next((r["epoch"] for r in self.rows if r["locked"]), None)

    def groups_at(self, epoch):
        """The grouping after `epoch` finished epochs."""
        rows = [r for r in self.rows if r["epoch"] <= epoch]
        return rows[-1]["groups"] if rows else self.initial_groups

    def _state_path(self):
        run_dir = self.trainer.run_dir
        return run_dir / STATE_FILE if run_dir else None

    def _read_state(self):
        path = self._state_path()
        if path and path.is_file():
            state = json.loads(path.read_text())
            if state["criterion"] != self.criterion:
                raise ValueError(f"`run_dir` holds a Selective Sharing run with criterion "
                                 f"{state['criterion']!r}; this callback's is {self.criterion!r}.")
            return state
        return None

    def _write_state(self):
        path = self._state_path()
        if path and self.trainer._is_chief():
            state = {"criterion": self.criterion, "rank": self.rank, "patience": self.patience,
                     "initial_groups": self.initial_groups, "rows": self.rows}
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, (json.dumps(state, indent=1) + "\n").encode())

    # --- wiring ------------------------------------------------------------------------
    def set_trainer(self, trainer):
        self.trainer = trainer
        names = list(trainer.task_names)
        state = self._read_state()
        if state is not None:
            self.initial_groups, rows = state["initial_groups"], state["rows"]
        else:
            self.initial_groups, rows = (self.initial_groups or groups_of(trainer.model)), self.rows
        reached = int(trainer.epoch.numpy())
        self.rows = [r for r in rows if r["epoch"] <= reached]
        self._all_rows = rows
        if normalize_groups(groups_of(trainer.model), names) != self.groups_at(reached):
            self._rebuild(self.groups_at(reached))
        trainer.add_restore_hook(self._before_restore)
        trainer.capture_branch_gradients(not self.locked)
        if self.rank is not None and trainer._capture is not None:  # refused now, not after an epoch
            check_rank(self.rank, tt_shape(*trainer._capture.total.shape[1:]))

    def _before_restore(self, epoch):
        """The trainer restores a checkpoint of `epoch` epochs: rebuild its grouping."""
        self.rows = [r for r in self._all_rows if r["epoch"] <= epoch]
        if normalize_groups(groups_of(self.trainer.model), self.trainer.task_names) != self.groups_at(epoch):
            self._rebuild(self.groups_at(epoch))
        self.trainer.capture_branch_gradients(not self.locked)

    def _rebuild(self, groups, keep=None):
        with self.trainer.distribution.scope():
            model, pairs = regroup(self.trainer.model, groups, keep)
        self.trainer.replace_model(model, pairs)

    # --- each epoch --------------------------------------------------------------------
    def on_epoch_begin(self, epoch, logs=None):
        if self.trainer is not None and not self.locked:
            self.trainer.captured_branch_gradients(reset=True)  # a fresh sum per epoch

    def on_epoch_end(self, epoch, logs=None):
        if self.trainer is None:
            raise RuntimeError("`SelectiveSharing` runs inside `Trainer.fit`, which hands it the trainer.")
        logs = logs if logs is not None else {}
        seconds = {"capture_read": 0.0, "decomposition": 0.0, "clustering": 0.0}
        if not self.locked and epoch + 1 >= self.start_epoch:
            self._cluster(epoch, logs, seconds)
        model = self.trainer.model
        logs["branches"] = float(len(groups_of(model)))
        logs["params"] = float(model.count_params())
        for key, value in seconds.items():
            logs[f"sharing_{key}_seconds"] = value

    def _cluster(self, epoch, logs, seconds):
        trainer, names = self.trainer, list(self.trainer.task_names)
        start = time.perf_counter()
        gradients = trainer.captured_branch_gradients(reset=True)
        seconds["capture_read"] = time.perf_counter() - start
        start = time.perf_counter()
        points = tt_points(gradients, self.rank)
        seconds["decomposition"] = time.perf_counter() - start
        start = time.perf_counter()
        clusters = cluster_tasks(points, names, self.criterion, self.seed, epoch, self.min_samples)
        seconds["clustering"] = time.perf_counter() - start
        before = normalize_groups(groups_of(trainer.model), names)
        after = join(before, clusters, names)
        changed = after != before
        if changed:
            losses = {t: logs.get(f"{t}_loss", 0.0) for t in names}
            keep = []
            for group in after:
                olds = [g for g in before if g[0] in group]
                best = min(olds, key=lambda g: np.mean([losses[t] for t in g]))
                keep.append(best[0])
            self._rebuild(after, keep)
        unchanged = 0 if changed else 1 + (self.rows[-1]["unchanged"] if self.rows else 0)
        locked = all(len(g) > 1 for g in after) or unchanged >= self.patience
        row = {"epoch": epoch + 1, "criterion": self.criterion, "clusters": clusters,
               "groups": after, "changed": changed, "unchanged": unchanged, "locked": locked,
               "params": int(trainer.model.count_params()),
               "seconds": {k: round(v, 4) for k, v in seconds.items()}}
        self.rows.append(row)
        self._all_rows = list(self.rows)
        self._write_state()
        if locked:
            trainer.capture_branch_gradients(False)
        if changed or locked:
            self._report(row)

    def _report(self, row):
        shared = [g for g in row["groups"] if len(g) > 1]
        text = (f"Selective Sharing ({row['criterion']}), epoch {row['epoch']}: "
                f"{len(row['groups'])} branches, {row['params']:,} parameters; shared: "
                f"{', '.join('{' + ', '.join(g) + '}' for g in shared) or 'none'}"
                f"{'; locked' if row['locked'] else ''} (decomposition "
                f"{row['seconds']['decomposition']:.2f} s, clustering {row['seconds']['clustering']:.2f} s)")
        if self.verbose:
            print(text, flush=True)
        run_dir = self.trainer.run_dir
        if run_dir and self.trainer._is_chief():
            writer = tf.summary.create_file_writer(str(run_dir / "tensorboard" / "train"))
            with writer.as_default():
                tf.summary.text("selective_sharing", text, step=row["epoch"] - 1)
            writer.flush()
