"""Fuzzing the parsers of files that come from outside: IDX (MNIST, Fashion-MNIST), the
restricted unpickler and the CIFAR-100 batches. Every input ends in a result or a declared
error (ValueError, or UnsafePickleError for a forbidden global), never another exception,
a hang or code run. Counts: `docs/reliability.md`."""

import gzip
import io
import os
import pickle
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mtl_tf.data.idx import read_idx
from mtl_tf.data.loaders import parse_cifar100_batch
from mtl_tf.data.safe_pickle import UnsafePickleError, safe_unpickle

# Per test; `MTL_TF_FUZZ_CASES=20000 pytest tests/data/test_fuzz_parsers.py` for a long run.
CASES = int(os.environ.get("MTL_TF_FUZZ_CASES", 1500))
FUZZ = settings(max_examples=CASES, deadline=None, database=None, derandomize="MTL_TF_FUZZ_SEED" not in os.environ,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
DIR = Path(tempfile.mkdtemp(prefix="mtl-tf-fuzz-"))
MARKER = DIR / "code-ran"


def _file(raw, name="case"):
    path = DIR / name
    path.write_bytes(raw)
    return path


def _valid_idx():
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    return b"\x00\x00\x08\x03" + b"".join(struct.pack(">I", d) for d in images.shape) + images.tobytes()


def _mutations(seed_bytes):
    """Byte strings near a valid file: cut, extended, bytes overwritten, gzip-wrapped."""
    edits = st.lists(st.tuples(st.integers(0, len(seed_bytes) - 1), st.integers(0, 255)), max_size=6)
    return st.one_of(
        st.binary(max_size=200),
        st.integers(0, len(seed_bytes)).map(lambda n: seed_bytes[:n]),
        st.binary(max_size=40).map(lambda tail: seed_bytes + tail),
        edits.map(lambda e: bytes(b if i not in dict(e) else dict(e)[i] for i, b in enumerate(seed_bytes))),
        edits.map(lambda e: gzip.compress(bytes(dict(e).get(i, b) for i, b in enumerate(seed_bytes)))),
        st.binary(max_size=60).map(lambda b: b"\x1f\x8b" + b),
    )


@FUZZ
@given(_mutations(_valid_idx()))
def test_idx_reader_returns_an_array_or_a_value_error(raw):
    try:
        array = read_idx(_file(raw))
    except ValueError:
        return
    assert isinstance(array, np.ndarray) and array.dtype.isnative


def test_idx_header_with_overflowing_dimensions_is_refused():
    # 2^32-1 on every axis: its element count overflows int64 (and np.prod) to a small number.
    raw = b"\x00\x00\x08\x04" + b"\xff\xff\xff\xff" * 4
    try:
        read_idx(_file(raw))
    except ValueError as error:
        assert "header promises shape" in str(error)
    else:
        raise AssertionError("an impossible shape was accepted")


# --- the restricted unpickler -------------------------------------------------------------
_leaves = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
                    st.text(max_size=8), st.binary(max_size=8),
                    st.lists(st.integers(0, 255), max_size=12).map(lambda v: np.array(v, np.uint8)),
                    st.lists(st.floats(-1e6, 1e6), max_size=6).map(lambda v: np.array(v, np.float32)))
_objects = st.recursive(_leaves, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.tuples(kids, kids),
    st.dictionaries(st.one_of(st.text(max_size=5), st.binary(max_size=5)), kids, max_size=4)), max_leaves=12)


def _same(a, b):
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


@FUZZ
@given(_objects, st.integers(2, 5), st.booleans())
def test_data_pickles_round_trip(value, protocol, compressed):
    raw = pickle.dumps(value, protocol=protocol)
    assert _same(safe_unpickle(_file(gzip.compress(raw) if compressed else raw)), value)


_SEED_PICKLE = pickle.dumps({b"data": np.zeros((2, 3), np.uint8), b"fine_labels": [1, 2]}, protocol=2)


@FUZZ
@given(_mutations(_SEED_PICKLE))
@example(b"\x8d\x00\x00\x00\x00\x00\x00\x00\x80")  # found by a 20,000-case run: OverflowError
@example(b"\x80\x02c_codecs\nencode\nq\x00X\x01\x00\x00\x00aX\x05\x00\x00\x00atin1\x86R.")
def test_mutated_pickles_end_in_a_value_or_a_declared_error(raw):
    try:
        safe_unpickle(_file(raw))
    except (ValueError, UnsafePickleError):
        pass
    assert not MARKER.exists()


def test_a_pickle_that_trips_numpys_reconstructor_is_declared_corrupt():
    """Found by a 20,000-case run (seed 2): one byte changed gives a dtype reference flags,
    and NumPy, once handed it, failed half-way building the array (SystemError), then again
    when freeing the half-built array, outside any `try` (an unraisable RuntimeError,
    `get_clear_loop` not set). The state is now refused before NumPy sees it."""
    import gc
    import sys

    raw = bytearray(_SEED_PICKLE)
    raw[206] = 3
    unraisable = []
    hook, sys.unraisablehook = sys.unraisablehook, unraisable.append
    try:
        with pytest.raises(ValueError, match="is truncated or corrupt .*a dtype's state is not one of a plain"):
            safe_unpickle(_file(bytes(raw)))
        gc.collect()
    finally:
        sys.unraisablehook = hook
    assert unraisable == []


def test_array_states_numpy_would_half_build_are_refused():
    """A state whose bytes do not fill the shape, an object dtype, a shape of floats."""
    good = pickle.dumps(np.arange(6, dtype=np.int16).reshape(2, 3), protocol=2)
    assert safe_unpickle(_file(good)).tolist() == [[0, 1, 2], [3, 4, 5]]

    class Short:  # pickles as an int16 array of 2 x 3 with 11 bytes
        def __reduce__(self):
            return (np.ndarray.__reduce__(np.zeros(1))[0], (np.ndarray, (0,), b"b"),
                    (1, (2, 3), np.dtype("int16"), False, b"\x00" * 11))

    short = pickle.dumps(Short(), protocol=2)
    with pytest.raises(ValueError, match="does not describe a numeric array and its bytes"):
        safe_unpickle(_file(short))
    with pytest.raises((ValueError, UnsafePickleError)):
        safe_unpickle(_file(pickle.dumps(np.array([None, 1], dtype=object), protocol=2)))


_GLOBALS = st.sampled_from([("os", "system"), ("builtins", "eval"), ("builtins", "exec"),
                            ("subprocess", "call"), ("numpy", "load"), ("numpy.testing", "assert_"),
                            ("posix", "system"), ("builtins", "getattr")])


@FUZZ
@given(_GLOBALS, st.integers(0, 3), st.booleans())
def test_pickles_calling_anything_else_are_refused_before_it_runs(target, protocol_bytes, wrap):
    module, name = target
    command = f"touch {MARKER}"
    body = (b"c" + f"{module}\n{name}\n".encode() + b"(" + pickle.dumps(command, protocol=0)[:-1]
            + b"tR.")
    if wrap:  # hidden inside a dict, behind harmless data
        body = b"\x80\x02}q\x00(X\x01\x00\x00\x00aK\x01X\x01\x00\x00\x00b" + body[:-1] + b"u."
    body = b"\x80" + bytes([2 + protocol_bytes]) + body if protocol_bytes and not wrap else body
    try:
        safe_unpickle(_file(body))
    except UnsafePickleError as error:
        assert f"{module}.{name}" in str(error)
    except ValueError:
        pass  # malformed around the global: refused as corrupt, still nothing ran
    else:
        raise AssertionError(f"a pickle naming {module}.{name} was loaded")
    assert not MARKER.exists()


# --- CIFAR-100 batches ---------------------------------------------------------------------
_batches = st.one_of(
    _objects,
    st.fixed_dictionaries({
        st.sampled_from([b"data", "data"]): st.one_of(
            st.integers(0, 3).map(lambda n: np.zeros((n, 3072), np.uint8)),
            st.integers(0, 3).map(lambda n: np.zeros((n, 3071), np.uint8)),
            st.just(np.zeros((2, 3072), np.float32)), _leaves),
        st.sampled_from([b"fine_labels", "fine_labels"]): st.lists(st.integers(-5, 120), max_size=3),
        st.sampled_from([b"coarse_labels", "coarse_labels"]): st.lists(st.integers(-5, 25), max_size=3),
    }),
)


@FUZZ
@given(_batches)
def test_cifar_batches_parse_or_are_refused_naming_the_file(batch):
    try:
        images, labels = parse_cifar100_batch(batch, "cifar-100-python/train")
    except ValueError as error:
        assert "cifar-100-python/train is not a CIFAR-100 batch" in str(error)
        return
    assert images.shape[1:] == (32, 32, 3) and images.dtype == np.uint8
    assert labels["fine"].max(initial=0) < 100 and labels["coarse"].max(initial=0) < 20
    assert len(labels["fine"]) == len(labels["coarse"]) == len(images)


def test_a_real_looking_cifar_batch_parses_through_the_unpickler(tmp_path):
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    raw = pickle.dumps({b"data": data, b"fine_labels": [3, 99], b"coarse_labels": [0, 19]}, protocol=2)
    images, labels = parse_cifar100_batch(safe_unpickle(_file(raw, "cifar")), "cifar")
    np.testing.assert_array_equal(images[1, 0, 0], data[1, [0, 1024, 2048]])
    assert labels["fine"].tolist() == [3, 99] and io is not None
