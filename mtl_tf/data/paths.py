"""Where data files live, and how they are written without leaving partial files."""

import contextlib
import os
import tempfile
from pathlib import Path

DATA_DIR_ENV = "MTL_TF_DATA_DIR"


def data_dir():
    """The project's data cache: `$MTL_TF_DATA_DIR`, else `$XDG_CACHE_HOME/mtl_tf`,
    else `~/.cache/mtl_tf`. Nothing is created by asking."""
    explicit = os.environ.get(DATA_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(cache).expanduser() / "mtl_tf"


def keras_cache_dir():
    """The Keras download cache (`$KERAS_HOME/datasets` or `~/.keras/datasets`)."""
    home = os.environ.get("KERAS_HOME") or os.path.join("~", ".keras")
    return Path(home).expanduser() / "datasets"


def check_not_a_file(argument, path):
    """Refuses a folder argument that names an existing file, before anything is written."""
    if Path(path).exists() and not Path(path).is_dir():
        raise ValueError(f"`{argument}` names a file, not a folder. Received: "
                         f"{argument}={str(path)!r}")


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path`; renames it onto `path` only if the
    block finishes, so a crash or an error never leaves a partial file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path, data):
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
