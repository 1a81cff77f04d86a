"""A restricted unpickler for the pickled data sets (MNIST's `mnist.pkl.gz`, CIFAR-100).

A pickle is a program: loading one can call any importable function. These data files
only need NumPy arrays, dtypes and scalars inside plain containers, so only the few
globals NumPy's own pickling emits are admitted; every other global is refused before
it is imported, so nothing named in the file runs.
"""

import gzip
import io
import math
import pickle
import struct
import zlib
from pathlib import Path

# (module, name) pairs NumPy emits when pickling arrays, across NumPy 1.x and 2.x
# (`numpy.core` became `numpy._core` in 2.0) and pickle protocols 2 to 5.
_ALLOWED_GLOBALS = frozenset(
    (module, name)
    for prefix in ("numpy.core", "numpy._core")
    for module, name in (
        (f"{prefix}.multiarray", "_reconstruct"),
        (f"{prefix}.multiarray", "scalar"),
        (f"{prefix}.numeric", "_frombuffer"),
    )
) | {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


def _latin1_encode(text, encoding="latin1", *rest):
    """Protocol 2 writes Python 3 bytes as `_codecs.encode(str, "latin1")`: admitted as
    that conversion alone, never another codec."""
    if rest or not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"Refusing `_codecs.encode` other than a latin1 string: "
                                f"encoding={encoding!r}")
    return text.encode("latin1")


def _empty_bytes(*args):
    """Protocol 2 writes b"" as `bytes()`; with an argument it could allocate at will."""
    if args:
        raise UnsafePickleError("Refusing `bytes(...)` with arguments in a pickle.")
    return b""


# Stand-ins for the few builtins the protocols use, admitting only their harmless uses.
_WRAPPED = {("_codecs", "encode"): _latin1_encode, ("__builtin__", "bytes"): _empty_bytes,
            ("builtins", "bytes"): _empty_bytes}

_GZIP_MAGIC = b"\x1f\x8b"


class UnsafePickleError(pickle.UnpicklingError):
    """Raised when a pickle names a global outside the NumPy allowlist."""


def _check_state(inst, state):
    """The state a BUILD opcode hands an array or a dtype, checked before NumPy's
    `__setstate__` sees it: NumPy changes the object in place and can fail half-way (a
    dtype given reference flags, an array given a buffer of the wrong size), and the
    half-built object then breaks NumPy when it is freed, outside any `try`. Data files
    hold plain numeric arrays only."""
    import numpy as np

    if isinstance(inst, np.dtype):
        # (version, byte order, subarray, names, fields, item size, alignment, flags)
        if not (isinstance(state, tuple) and len(state) == 8 and state[2:5] == (None, None, None)
                and state[7] == 0):
            raise ValueError(f"a dtype's state is not one of a plain numeric dtype: {state!r:.200}")
    elif isinstance(inst, np.ndarray):
        # (version, shape, dtype, Fortran order, data); version 0 has no first item
        ok = isinstance(state, tuple) and len(state) in (4, 5)
        shape, dtype, _, data = state[-4:] if ok else (None,) * 4
        ok = ok and (isinstance(shape, tuple) and all(type(d) is int and d >= 0 for d in shape)
                     and isinstance(dtype, np.dtype) and not dtype.hasobject
                     and isinstance(data, (bytes, str)))  # str: Python 2's, read as latin1
        if not ok or len(data) != math.prod(shape) * dtype.itemsize:
            raise ValueError(f"an array's state does not describe a numeric array and its "
                             f"bytes: {state!r:.200}")


# The pure-Python unpickler, since the C one offers no hook on BUILD (see `_check_state`).
class _NumpyOnlyUnpickler(pickle._Unpickler):
    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, path):
        # latin1 lets NumPy read array buffers written by Python 2 (mnist.pkl.gz).
        super().__init__(file, encoding="latin1")
        self._path = path

    def load_build(self):
        _check_state(self.stack[-2], self.stack[-1])
        super().load_build()

    dispatch[pickle.BUILD[0]] = load_build

    def find_class(self, module, name):
        if (module, name) in _WRAPPED:
            return _WRAPPED[(module, name)]
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"Refusing to unpickle {self._path}: it asks for the global "
            f"`{module}.{name}`, and only NumPy arrays, dtypes and scalars are "
            f"admitted. The file is not a data file this project reads, or it has "
            f"been tampered with; nothing in it was run."
        )


def safe_unpickle(path):
    """Unpickles `path` (gzip-compressed or plain) admitting only NumPy arrays.

    Args:
        path: str or `Path`. A `.pkl`, `.pkl.gz` or CIFAR-style pickle file.

    Returns:
        The unpickled object: plain containers (dict, list, tuple), numbers, strings,
        bytes and NumPy arrays.

    Raises:
        FileNotFoundError: `path` does not exist.
        UnsafePickleError: the pickle names any other global (nothing is executed).
        ValueError: the file is truncated or corrupt.

    Example:
    ```python
    import pickle, tempfile, numpy as np
    from mtl_tf.data import safe_unpickle
    path = tempfile.mktemp(suffix=".pkl")
    with open(path, "wb") as f:
        pickle.dump({"x": np.arange(3)}, f)
    assert safe_unpickle(path)["x"].tolist() == [0, 1, 2]
    ```
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"`path` does not name a file. Received: path={str(path)!r}")
    raw = path.read_bytes()
    try:
        if raw[:2] == _GZIP_MAGIC:
            raw = gzip.decompress(raw)
        return _NumpyOnlyUnpickler(io.BytesIO(raw), path).load()
    except UnsafePickleError:
        raise
    except (EOFError, OSError, zlib.error, struct.error, IndexError, KeyError, ValueError,
            TypeError, AttributeError, LookupError, OverflowError, RecursionError, MemoryError,
            SystemError,
            pickle.UnpicklingError) as error:
        # A malformed pickle fails in many ways (NumPy's reconstructors given wrong
        # arguments raise TypeError, deep nesting RecursionError): each means corrupt.
        raise ValueError(
            f"{path} is truncated or corrupt ({type(error).__name__}: {error}). "
            f"Delete it and run `mtl-tf data fetch` to obtain a fresh copy."
        ) from error
