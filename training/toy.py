"""The two-objective toy problem of CAGrad, Nash-MTL and FAMO, run through the Trainer for
every strategy: trajectories over the loss contours beside the Pareto set, and whether
each run reached it.

The problem (CAGrad's `toy.py`, Nash-MTL's and FAMO's `experiments/toy/`, the same
code in all three): for a point x = (x1, x2),

    f1 = c1 (log max(|0.5 (-x1 - 7) - tanh(-x2)|, 5e-6) + 6) + c2 (((-x1 + 7)^2 + 0.1 (-x2 - 8)^2) / 10 - 20)
    f2 = c1 (log max(|0.5 (-x1 + 3) + tanh(-x2) + 2|, 5e-6) + 6) + c2 (((-x1 - 7)^2 + 0.1 (-x2 - 8)^2) / 10 - 20)

with c1 = max(tanh(x2 / 2), 0) and c2 = max(tanh(-x2 / 2), 0). Nash-MTL's and FAMO's toys
feed the methods 0.1 f1 and f2, from five starting points, Adam at 1e-3 for 35,000 (Nash-MTL)
or 50,000 (FAMO) steps; Nash-MTL's are the defaults here. (Adam at 1e-2 for 3,500 steps
is not the same path: Adam's second moments remember about 1,000 steps whatever the
rate, so after a steep stretch its steps stay short for a tenth of that run, and many
runs stopped half-way.) Each step is the Trainer's whole step, about 1 ms on two
weights, so a strategy's five runs take about three minutes; `jobs` runs strategies in
parallel processes of one thread each.

The Trainer trains a model whose shared trunk is the point itself and whose head t
returns sqrt(L_t), a regression task against 0, so its squared error is L_t and every
strategy, of loss or gradient level, runs its real step. The losses are shifted to be
positive, L1 = 0.1 f1 + 2.1 and L2 = f2 + 21: FAMO's toy subtracts the same minima
(-21 x 0.1, -21) inside its log, and the log- and ratio-based strategies need positive
losses. A shift does not move a gradient, so gradient-level methods see Nash-MTL's
problem exactly; loss-level ones that read the losses' values (uncertainty, DWA, GLS,
IMTL-L, SI, FAMO) see these shifted losses. An epoch is 500 steps (DWA and STCH read
epochs; the trajectory is drawn from one point per epoch).

The Pareto set. For x2 < 0 only the quadratic parts are on (c1 = 0), so f_t = c2 q_t, and
a weighted sum u f1 + (1 - u) f2 (u in [0, 1]; scaling f1 only reparametrises u, so the
set in x is the same for L1, L2) is stationary at x1 = 14 u - 7 and x2 the minimiser of
c2(x2) (0.01 (x2 + 8)^2 + 19.6 u (1 - u) - 20). That is our derivation: the repositories
draw the segment x2 = -8.3552, x1 in [-7, 7]; the set bends below it, to -8.43 at the ends.
A run reached the front when no point of the Pareto set beats its last point on both
objectives by more than `TOLERANCE` (0.01 of f1 and f2, unscaled): its *gap*,
max over the set's points p of min_t (f_t(end) - f_t(p)), is below it. Distances in x
would mislead: the objectives are nearly flat in x2 near the set (f changes by 0.002
between x2 = -8.02 and the set at x1 = 7), so a run can be on the front in loss long
before it is in x.
"""

import io
from pathlib import Path

import numpy as np

from mtl_tf.data.paths import atomic_write_bytes

LOWER = 5e-6
STARTS = ((-8.5, 7.5), (0.0, 0.0), (9.0, 9.0), (-7.5, -0.5), (9.0, -1.0))
SCALE, SHIFT = 0.1, (2.1, 21.0)
LEARNING_RATE, STEPS, EPOCH_STEPS = 1e-3, 35_000, 500
TOLERANCE = 0.01


def objectives(x1, x2, ops=np):
    """(f1, f2) at points (x1, x2), in NumPy or, with `ops=keras.ops`, differentiably."""
    c1 = ops.maximum(ops.tanh(x2 * 0.5), 0.0)
    c2 = ops.maximum(ops.tanh(-x2 * 0.5), 0.0)
    log1 = ops.log(ops.maximum(ops.abs(0.5 * (-x1 - 7) - ops.tanh(-x2)), LOWER)) + 6
    log2 = ops.log(ops.maximum(ops.abs(0.5 * (-x1 + 3) + ops.tanh(-x2) + 2), LOWER)) + 6
    sq1 = ((-x1 + 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
    sq2 = ((-x1 - 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
    return c1 * log1 + c2 * sq1, c1 * log2 + c2 * sq2


def task_losses(x1, x2, ops=np):
    """The losses the strategies see: L1 = 0.1 f1 + 2.1 and L2 = f2 + 21."""
    f1, f2 = objectives(x1, x2, ops)
    return SCALE * f1 + SHIFT[0], f2 + SHIFT[1]


def pareto_set(points=2001):
    """The Pareto set in x as `points` (x1, x2) pairs, x1 from -7 to 7."""
    from scipy.optimize import minimize_scalar

    u = np.linspace(0.0, 1.0, points)
    rows = []
    for ui in u:
        def along(x2, ui=ui):
            return np.tanh(-x2 / 2) * (0.01 * (x2 + 8) ** 2 + 19.6 * ui * (1 - ui) - 20)
        x2 = minimize_scalar(along, bounds=(-12.0, -4.0), method="bounded", options={"xatol": 1e-10}).x
        rows.append((14 * ui - 7, x2))
    return np.array(rows)


def gap(point, front):
    """How much the best point of `front` (the Pareto set in x) beats `point` on both
    objectives at once: max over p of min_t (f_t(point) - f_t(p)); about 0 on the front."""
    values = np.stack(objectives(front[:, 0], front[:, 1]), axis=1)
    own = np.array(objectives(float(point[0]), float(point[1])))
    if not np.all(np.isfinite(own)):
        return float("nan")
    return float(np.max(np.min(own - values, axis=1)))


def reached(point, front):
    return bool(np.all(np.isfinite(point))) and gap(point, front) < TOLERANCE


def build_model(start):
    """The toy as a multi-task Keras model: a `trunk` that is the point (one 2-vector
    weight, repeated for every example) and heads `head_f1`, `head_f2` returning
    sqrt(L_t), so a regression task's squared error against 0 is L_t."""
    import keras
    from keras import ops

    class Point(keras.layers.Layer):
        def build(self, input_shape):
            self.x = self.add_weight(shape=(2,), initializer=keras.initializers.Constant(list(start)), name="x")

        def call(self, inputs):
            return ops.zeros_like(inputs[:, :1]) + self.x

    class RootLoss(keras.layers.Layer):
        def __init__(self, index, **kwargs):
            super().__init__(**kwargs)
            self.index = index

        def call(self, z):
            return ops.sqrt(task_losses(z[:, 0], z[:, 1], ops)[self.index])[:, None]

    trunk = keras.Sequential([keras.Input((1,)), Point()], name="trunk")
    inputs = keras.Input((1,), name="inputs")
    z = trunk(inputs)
    outputs = {f"f{i + 1}": keras.Sequential([keras.Input((2,)), RootLoss(i)], name=f"head_f{i + 1}")(z)
               for i in range(2)}
    return keras.Model(inputs, outputs, name="toy")


def run(weighting, start, steps=STEPS, learning_rate=LEARNING_RATE, steps_per_execution=EPOCH_STEPS):
    """One run from `start`: the trajectory (one point per epoch of `EPOCH_STEPS` steps,
    the start first) as an (epochs + 1) x 2 array; a run whose losses became NaN or Inf
    ends with a NaN point (it diverged)."""
    import keras

    from mtl_tf.tasks import Task
    from training.trainer import Trainer

    if steps % EPOCH_STEPS:
        raise ValueError(f"`steps` must be a multiple of {EPOCH_STEPS}. Received: steps={steps!r}")
    model = build_model(start)
    tasks = [Task("f1", 1, kind="regression"), Task("f2", 1, kind="regression")]
    trainer = Trainer(model, tasks=tasks, weighting=weighting, shuffle=False, seed=0,
                      optimizer=keras.optimizers.Adam(learning_rate), steps_per_execution=steps_per_execution)
    batch = 3  # the strategies that read three parts of a batch (MoDo, SDMGrad) get three copies
    x = np.zeros((batch * EPOCH_STEPS, 1), np.float32)
    y = {t.name: np.zeros((batch * EPOCH_STEPS, 1), np.float32) for t in tasks}
    point = model.get_layer("trunk").layers[-1].x
    path = [np.array(start, np.float64)]
    record = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: path.append(point.numpy().copy()))
    try:
        trainer.fit(x, y, epochs=steps // EPOCH_STEPS, batch_size=batch, callbacks=[record], verbose=0)
    except FloatingPointError:  # the strategy's step made the point non-finite: the path ends there
        path.append(np.full(2, np.nan))
    return np.array(path)


def strategies():
    """Every registered strategy the two-task problem admits (the leaderboard's)."""
    from training.reproduce.multi_mnist import methods

    return [m for m in methods("quick") if m != "stl"]


def _runs(name, starts, steps, learning_rate):
    return [run(name, start, steps, learning_rate) for start in starts]


def run_all(names=None, starts=STARTS, steps=STEPS, learning_rate=LEARNING_RATE, jobs=1, log=print, keep=None):
    """{strategy: [trajectory per start]} for `names` (default: every strategy), the
    strategies spread over `jobs` processes of one thread each (a toy step is too small to
    use two cores, so two processes run twice as many). With `keep` (a folder), each
    strategy's trajectories are saved there as it finishes and read back instead of run
    again, so an interrupted demo resumes."""
    import multiprocessing
    import time
    from concurrent.futures import ProcessPoolExecutor

    from training.reproduce.common import one_thread_worker

    names = list(names or strategies())
    front = pareto_set()
    paths, begin = {}, time.time()

    def record(name):
        return Path(keep) / f"{name}-{steps}-{learning_rate:g}.npz"

    kept = {}
    for name in names if keep else ():
        if record(name).exists():
            with np.load(record(name)) as saved:
                kept[name] = [saved[f"start{i}"] for i in range(len(starts))]

    def done(i, name, runs):
        if keep and name not in kept:
            Path(keep).mkdir(parents=True, exist_ok=True)
            buffer = io.BytesIO()
            np.savez(buffer, **{f"start{j}": p for j, p in enumerate(runs)})
            atomic_write_bytes(record(name), buffer.getvalue())
        paths[name] = runs
        count = sum(reached(p[-1], front) for p in runs)
        log(f"[{i}/{len(names)}] {name}: {count}/{len(starts)} reached the front ({time.time() - begin:.0f} s in all)")

    if jobs == 1:
        for i, name in enumerate(names):
            done(i + 1, name, kept[name] if name in kept else _runs(name, starts, steps, learning_rate))
    else:
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=one_thread_worker) as pool:
            # The slowest first (their solvers iterate most near the front), so the pool ends together.
            order = sorted((n for n in names if n not in kept),
                           key=lambda n: n not in ("fairgrad", "nash_mtl", "cagrad", "sdmgrad", "modo"))
            futures = {name: pool.submit(_runs, name, starts, steps, learning_rate) for name in order}
            for i, name in enumerate(names):
                done(i + 1, name, kept[name] if name in kept else futures[name].result())
    return {name: paths[name] for name in names}


def report(paths, steps, learning_rate, seconds):
    """A Markdown table: each strategy's gap to the Pareto front per start."""
    front = pareto_set()
    lines = ["# The two-objective toy: which strategies reach the Pareto front", "",
             f"Adam at {learning_rate:g} for {steps:,} steps from each of the five starting points of Nash-MTL's "
             f"and FAMO's toy; the first loss scaled by 0.1 (theirs). A run reaches the front when no point of the "
             f"Pareto set beats its last point on both objectives by {TOLERANCE} or more (its gap). Wall time {seconds:.0f} s. `training/toy.py` says how "
             "the problem is fed to the Trainer.", "",
             "| strategy | reached | " + " | ".join(f"from ({a:g}, {b:g})" for a, b in STARTS) + " |",
             "|---|---|" + "---|" * len(STARTS)]
    for name, runs in paths.items():
        gaps = [gap(p[-1], front) for p in runs]
        cells = ["diverged" if not np.isfinite(g) else ("yes" if g < TOLERANCE else "no") + f" ({max(g, 0.0):.3f})"
                 for g in gaps]
        lines.append(f"| {name} | {sum(g < TOLERANCE for g in gaps)}/{len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines + ["", "The gap in brackets.", "", "![Trajectories](toy.png)", ""])


def plot(paths, path, columns=6):
    """One panel per strategy: the trajectories over the contours of L1 + L2, the
    Pareto set in grey, the starts black, the ends red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    front = pareto_set()
    grid = np.linspace(-10, 10, 301)
    g1, g2 = np.meshgrid(grid, grid)
    total = sum(task_losses(g1, g2))
    rows = -(-len(paths) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.3 * columns, 2.3 * rows), sharex=True, sharey=True)
    axes = np.atleast_1d(axes).ravel()
    for ax, (name, runs) in zip(axes, paths.items()):
        ax.contour(g1, g2, total, levels=18, cmap="viridis", linewidths=0.6)
        ax.plot(front[:, 0], front[:, 1], color="#72727A", lw=4, alpha=0.7)
        for p in runs:
            ax.plot(p[:, 0], p[:, 1], color="tab:orange", lw=1.2)
            ax.plot(*p[0], "o", color="black", ms=3)
            end = p[-1] if np.all(np.isfinite(p[-1])) else p[-2]  # a diverged run: its last finite point
            ax.plot(*end, "*" if reached(p[-1], front) else "x", color="tab:red", ms=6)
        ax.set_title(name, fontsize=9)
        ax.set_xlim(-10, 10)
        ax.set_ylim(-10, 10)
    for ax in axes[len(paths):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def demo(out, names=None, steps=STEPS, learning_rate=LEARNING_RATE, jobs=1, log=print):
    """Runs every strategy from the five starts and writes `toy.png`, `toy.md` and
    `toy.json` (the final points) into `out`; `out/runs` keeps each strategy's
    trajectories as it finishes, so the same command started again resumes."""
    import json
    import time

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    begin = time.time()
    paths = run_all(names, steps=steps, learning_rate=learning_rate, jobs=jobs, log=log, keep=out / "runs")
    seconds = time.time() - begin
    plot(paths, out / "toy.png")
    front = pareto_set()
    atomic_write_bytes(out / "toy.md", report(paths, steps, learning_rate, seconds).encode())
    record = {"steps": steps, "learning_rate": learning_rate, "tolerance": TOLERANCE, "seconds": round(seconds, 1),
              "starts": [list(s) for s in STARTS],
              "runs": {n: [{"end": [round(float(v), 5) for v in p[-1]], "gap": round(gap(p[-1], front), 5),
                            "reached": reached(p[-1], front)} if np.all(np.isfinite(p[-1])) else
                           {"end": None, "gap": None, "reached": False, "diverged_after_steps": EPOCH_STEPS * (len(p) - 2)}
                           for p in runs]
                       for n, runs in paths.items()}}
    atomic_write_bytes(out / "toy.json", (json.dumps(record, indent=2) + "\n").encode())
    return record
