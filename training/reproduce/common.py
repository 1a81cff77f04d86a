"""What every reproduction shares (`../shared/REPRODUCTION.md`): an output folder that
remembers finished runs so an interrupted command resumes, the machine and library
versions, the wall time over sittings, and `results.json` / `report.md` written atomically.
"""

import collections
import csv
import json
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np

from mtl_tf.data.paths import atomic_write_bytes, check_not_a_file


def device():
    """The CPU model and core count (this project trains on CPU)."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {len(os.sched_getaffinity(0))} cores, no GPU"


def versions():
    import keras
    import tensorflow as tf

    return {"python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": np.__version__}


def write_json(path, value):
    atomic_write_bytes(path, (json.dumps(value, indent=2) + "\n").encode())


def mean_std(values):
    """Mean and sample standard deviation (ddof 1, as `torch.std`), std 0 for one value."""
    values = np.asarray(values, np.float64)
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return float(values.mean()), std


def epoch_log(log, epochs, every, describe):
    """A callback that logs `    epoch e/E: <describe(logs)>` every `every` epochs and at
    the last: a long reproduction's progress."""
    import keras

    def on_epoch_end(epoch, logs):
        if (epoch + 1) % every == 0 or epoch + 1 == epochs:
            log(f"    epoch {epoch + 1}/{epochs}: {describe(logs)}")

    return keras.callbacks.LambdaCallback(on_epoch_end=on_epoch_end)


def check_profile(profiles, profile, runs=None):
    """`(profiles[profile], runs)`: the profile's settings and the run count (`runs`, or
    the profile's own), refusing an unknown profile or a run count that is not a positive
    integer."""
    if profile not in profiles:
        raise ValueError(f"`profile` must be one of {sorted(profiles)}. Received: profile={profile!r}")
    config = profiles[profile]
    runs = config.get("runs") if runs is None else runs
    if runs is not None and (not isinstance(runs, int) or runs < 1):
        raise ValueError(f"`runs` must be a positive integer. Received: runs={runs!r}")
    return config, runs


def read_history(path, missing=None):
    """A run's `history.csv` as {column: [float, ...]}; a cell a resumed run left blank
    (a column added later; Keras's "NA") reads as `missing`."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {key: [float(r[key]) if r[key] not in ("", "NA") else missing for r in rows]
            for key in rows[0]} if rows else {}


def check_only(only, names):
    """Refuses an `only` list naming settings that are not among `names`."""
    unknown = sorted(set(only or ()) - set(names))
    if unknown:
        raise ValueError(f"`only` names unknown settings: {unknown}. Known: {list(names)}")


def _slug(setting):
    return setting.replace(" ", "_").replace("+", "-")


def run_path(out, setting, run):
    """Where the record of run `run` of `setting` is kept in the folder `out`."""
    return Path(out) / "runs" / _slug(setting) / f"run-{run:02d}.json"


def unfinished_path(root, setting, run):
    """The folder where run `run` of `setting` keeps its checkpoints while it trains, under
    `root` (`Workdir.unfinished_root`)."""
    return Path(root) / "unfinished" / _slug(setting) / f"run-{run:02d}"


UNNAMED = "machines unnamed in their records"  # runs recorded before records named theirs


class Workdir:
    """The output folder of one reproduction command.

    `manifest.json` records the protocol (profile, seed, epochs...) and the sittings'
    wall time; a folder holding another protocol is refused rather than mixed. Each
    finished run is one JSON file under `runs/`, written atomically when it ends, so a
    command started again skips it.

    `records`, when given, is a second folder that keeps only small files (the manifest
    and one JSON per finished run) so they can be committed: a run found there counts as
    finished, and every run finished here is written there too, so a fresh clone on
    another machine continues the table where it stands. A reproduction whose runs outlast
    a sitting checkpoints them under `unfinished_root` (in `records`, when given): a
    commit then carries the runs in progress to the next machine as well, and each run's
    folder there is removed once its record is saved. A command that trains nothing (one
    that only renders the report of the runs finished so far) adds no sitting.
    """

    def __init__(self, out, protocol, records=None):
        self.out = Path(out)
        self.records = Path(records) if records else None
        self.protocol = dict(protocol)
        self.manifest_path = self.out / "manifest.json"
        manifest = {"protocol": self.protocol, "sittings": []}
        for folder, option in ((self.out, "--out"), (self.records, "--records")):
            if folder is None:
                continue
            check_not_a_file(option, folder)
            if folder.is_dir() and not (folder / "manifest.json").exists() and any(folder.iterdir()):
                raise ValueError(f"`{option}` {str(folder)!r} holds other files (no manifest.json of "
                                 f"a reproduction): name a new or empty folder, or one to resume.")
        for folder in (self.out, self.records):
            if folder and (folder / "manifest.json").exists():
                manifest = json.loads((folder / "manifest.json").read_text())
                changed = {k: (manifest["protocol"].get(k), v) for k, v in self.protocol.items()
                           if manifest["protocol"].get(k) != v}
                if changed:
                    option = "--out" if folder == self.out else "--records"
                    raise ValueError(f"`{option}` {str(folder)!r} holds runs of another protocol "
                                     f"(there, asked): {changed}. Use another folder.")
                break
        self.manifest = manifest
        self._sitting = None  # this command's entry in the manifest, added when it first trains
        self._machines = {}  # (setting, run) -> the machine its record names
        self._started, self._start = time.strftime("%Y-%m-%d %H:%M:%S"), time.time()

    def run_path(self, setting, run):
        return run_path(self.out, setting, run)

    def finished(self, setting, run):
        for folder in (self.out, self.records):
            path = folder and run_path(folder, setting, run)
            if path and path.exists():
                record = json.loads(path.read_text())
                self._machines[(setting, run)] = record.get("machine")
                return record
        return None

    @property
    def trained_on(self):
        """{machine: runs} over the finished runs read so far; a table's runs may come from
        several machines, and multi-task runs are not bit-identical across CPUs. Runs
        recorded before records named their machine count under `UNNAMED`."""
        return dict(collections.Counter(m or UNNAMED for m in self._machines.values()).most_common())

    @property
    def unfinished_root(self):
        return self.records or self.out

    def save_run(self, setting, run, result):
        result = {**result, "machine": result.get("machine") or device()}
        self._machines[(setting, run)] = result["machine"]
        for folder in (self.out, self.records):
            if folder:
                write_json(run_path(folder, setting, run), result)
        shutil.rmtree(unfinished_path(self.unfinished_root, setting, run), ignore_errors=True)
        self.touch()

    def touch(self):
        """Records this sitting's wall time so far (training in it has started)."""
        if self._sitting is None:
            self._sitting = {"started": self._started, "seconds": 0.0}
            self.manifest["sittings"].append(self._sitting)
        self._sitting["seconds"] = round(time.time() - self._start, 1)
        for folder in (self.out, self.records):
            if folder:
                write_json(folder / "manifest.json", self.manifest)

    def close(self):
        """Records the sitting's final wall time, if it trained: a command that only read
        the finished runs leaves the manifest as it was (and copies it into a new `out`,
        so that folder's report can be rendered or resumed again)."""
        if self._sitting is not None:
            self.touch()
        elif not self.manifest_path.exists():
            write_json(self.manifest_path, self.manifest)

    @property
    def wall_seconds(self):
        return sum(s["seconds"] for s in self.manifest["sittings"])


def run_settings(workdir, names, runs, chosen, train, describe, log, by_run=False, order=None, jobs=1):
    """The loop every reproduction runs: for each setting of `names` and each run, the
    record a sitting left, or, for the settings in `chosen`, `train(name, run)`, saved as
    soon as it ends; `describe(record)` is its log line. `by_run` goes run by run across
    the settings, so an interrupted table has every setting's first runs; `order`, a list
    of (name, run) pairs, names another order. With `jobs` > 1 the runs train in that
    order in `jobs` processes of one thread each (`train` must then pickle: a top-level
    function or a `functools.partial` of one). Returns {name: [records]} in run order."""
    order = run_order(names, runs, by_run) if order is None else order
    pending = [(n, r) for n, r in order if n in chosen and workdir.finished(n, r) is None]
    if pending:
        workdir.touch()  # the manifest first: a run cut off leaves its checkpoints in the folders

    def save(i, name, run, record):
        workdir.save_run(name, run, record)
        log(f"    [{i}/{len(pending)}] {name}, run {run + 1}/{runs}: {describe(record)} ({record['seconds']:.0f} s)")

    if jobs > 1 and len(pending) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        log(f"{len(pending)} runs in {jobs} processes of one thread each")
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=one_thread_worker) as pool:
            futures = {pool.submit(train, n, r): (n, r) for n, r in pending}  # started in this order
            for i, future in enumerate(as_completed(futures), start=1):
                save(i, *futures[future], future.result())
    else:
        for i, (name, run) in enumerate(pending, start=1):
            log(f"[{i}/{len(pending)}] {name}, run {run + 1}/{runs}")
            save(i, name, run, train(name, run))
    found = {name: [] for name in names}
    for name, run in order:
        record = workdir.finished(name, run)
        if record is not None:
            found[name].append(record)
    workdir.close()
    return found


def run_order(names, runs, by_run=False):
    """The (name, run) pairs of `run_settings`: setting by setting, or with `by_run` run by
    run across the settings."""
    return [(n, r) for r in range(runs) for n in names] if by_run else [(n, r) for n in names for r in range(runs)]


def status(pairs, found, seconds=None):
    """What a table's runs stand at: of the (name, run) `pairs` in the order they train, how
    many are finished (in `found`, {name: [records]}), the next three, and the hours left
    when `seconds(name)` estimates a run's training time."""
    todo = [(n, r) for n, r in pairs if len(found.get(n, [])) <= r]
    left = None
    if seconds is not None and all(seconds(n) is not None for n, _ in todo):
        left = round(sum(seconds(n) for n, _ in todo) / 3600, 1)
    return {"runs_finished": len(pairs) - len(todo), "runs": len(pairs),
            "next": [f"{n}, run {r + 1}" for n, r in todo[:3]], "hours_left": left}


def status_line(status):
    """A report's first line: what is complete, what trains next, the hours left."""
    line = f"**Status: {status['runs_finished']} of {status['runs']} runs finished"
    if not status["next"]:
        return line + "; complete.**"
    line += (f".** Next in order (the one training now, if a command is running): "
             f"{'; '.join(status['next'])}.")
    if status["hours_left"] is not None:
        line += f" About {status['hours_left']:,.1f} h of training left at these runs' speed."
    return line


def one_thread_worker():
    """A worker process of a pool: one thread, since the other workers run beside it (set
    before TensorFlow's runtime starts). It ends when the process that started it does
    (killed, its pool cannot), instead of training on for nobody."""
    import os
    import threading

    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(2)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()
    import mtl_tf  # noqa: F401 - a quiet TensorFlow start-up
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def default_records(name, profile):
    """Where a profile's records are committed, when run from the repository
    (`docs/results` exists): `docs/results/records/NAME-PROFILE`. The quick profiles keep
    theirs too: some take hours, and a sitting's machine is not the next one's."""
    dest = Path("docs/results")
    return dest / "records" / f"{name}-{profile}" if dest.is_dir() else None


def machine_line(results):
    """A report's machine: the one that rendered it, and the ones its runs trained on."""
    trained = results.get("trained_on") or {}
    if list(trained) in ([], [results["device"]]):
        return results["device"]
    return (f"this report rendered on {results['device']}; its runs trained on "
            + ", ".join(f"{machine} ({runs} run{'s' if runs > 1 else ''})" for machine, runs in trained.items()))


def format_seconds(seconds):
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def publish(out, name, profile, dest="docs/results"):
    """Copies `out`'s report, results and figures to `dest` as `NAME-PROFILE.md`,
    `NAME-PROFILE.json` and `NAME-PROFILE-<figure>.png`, with the report's figure links
    rewritten. Returns the report's new path."""
    out, dest = Path(out), Path(dest)
    stem = f"{name}-{profile}"
    report = (out / "report.md").read_text()
    for figure in sorted(out.glob("*.png")):
        target = f"{stem}-{figure.name}"
        atomic_write_bytes(dest / target, figure.read_bytes())
        report = report.replace(f"({figure.name})", f"({target})")
    atomic_write_bytes(dest / f"{stem}.json", (out / "results.json").read_bytes())
    atomic_write_bytes(dest / f"{stem}.md", report.encode())
    return dest / f"{stem}.md"
