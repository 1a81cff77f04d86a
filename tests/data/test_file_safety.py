"""Reading files safely: hostile pickles, truncated files, tar traversal, CIFAR-100's format."""

import gzip
import io
import os
import pickle
import tarfile

import numpy as np
import pytest

from mtl_tf.data import load_numpy, safe_extract, safe_unpickle
from mtl_tf.data.idx import read_idx
from mtl_tf.data.paths import atomic_path
from mtl_tf.data.safe_pickle import UnsafePickleError


class _Payload:
    """Unpickling this calls os.system: a pickle that runs code when loaded."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("compress", [False, True])
def test_a_pickle_that_would_run_code_is_refused_and_never_runs(tmp_path, compress):
    marker = tmp_path / "payload-ran"
    data = pickle.dumps({"data": _Payload(marker)})
    path = tmp_path / ("evil.pkl.gz" if compress else "evil.pkl")
    path.write_bytes(gzip.compress(data) if compress else data)
    with pytest.raises(UnsafePickleError, match=r"posix\.system|os\.system"):
        safe_unpickle(path)
    assert not marker.exists()
    pickle.loads(data)  # the control: the same bytes do run code under plain pickle
    assert marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_arrays_round_trip_through_every_protocol(tmp_path, protocol):
    value = {"x": np.arange(12, dtype=np.float32).reshape(3, 4), "y": [np.int64(3), b"k"]}
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps(value, protocol=protocol))
    loaded = safe_unpickle(path)
    np.testing.assert_array_equal(loaded["x"], value["x"])
    assert loaded["y"][0] == 3 and loaded["y"][1] == b"k"


def test_truncated_gzip_pickle_gives_a_clear_error(tmp_path):
    path = tmp_path / "mnist.pkl.gz"
    blob = gzip.compress(pickle.dumps(np.zeros((100, 100)), protocol=2))
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match=r"mnist\.pkl\.gz is truncated or corrupt"):
        safe_unpickle(path)


def test_missing_pickle_names_the_argument(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"`path`.*nope\.pkl"):
        safe_unpickle(tmp_path / "nope.pkl")


def _idx_bytes(array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_idx_reads_what_it_was_given_and_rejects_truncation(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    good = tmp_path / "good-idx3-ubyte.gz"
    good.write_bytes(gzip.compress(_idx_bytes(array)))
    np.testing.assert_array_equal(read_idx(good), array)

    short = tmp_path / "short-idx3-ubyte"
    short.write_bytes(_idx_bytes(array)[:-5])
    with pytest.raises(ValueError, match=r"truncated or padded.*\(2, 3, 4\)"):
        read_idx(short)

    cut = tmp_path / "cut-idx3-ubyte.gz"
    cut.write_bytes(gzip.compress(_idx_bytes(array))[:-10])
    with pytest.raises(ValueError, match="truncated or corrupt gzip"):
        read_idx(cut)


def _write_cifar100(folder, n=6, seed=0):
    """A CIFAR-100 folder in the real format: Python-2-style pickles with bytes keys,
    `data` as N x 3072 uint8 rows (R plane, G plane, B plane), label lists."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    expected = {}
    for split in ("train", "test"):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        fine = rng.integers(0, 100, size=n).tolist()
        coarse = rng.integers(0, 20, size=n).tolist()
        batch = {b"filenames": [b"x.png"] * n, b"batch_label": b"training batch 1 of 1",
                 b"fine_labels": fine, b"coarse_labels": coarse, b"data": data}
        (folder / split).write_bytes(pickle.dumps(batch, protocol=2))
        expected[split] = (data, fine, coarse)
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": [b"apple"] * 100}, 2))
    return expected


def test_cifar100_in_the_real_format_loads_with_fine_and_coarse_labels(tmp_path):
    expected = _write_cifar100(tmp_path / "cifar-100-python")
    images, labels = load_numpy("cifar100", "test", path=tmp_path)
    data, fine, coarse = expected["test"]
    assert images.shape == (6, 32, 32, 3) and images.dtype == np.uint8
    # Pixel (row 0, col 1) of image 2: red at index 1, green at 1024 + 1, blue at 2048 + 1.
    assert images[2, 0, 1].tolist() == [data[2, 1], data[2, 1025], data[2, 2049]]
    assert labels["fine"].tolist() == fine and labels["coarse"].tolist() == coarse


def test_cifar100_tarball_is_unpacked_and_read(tmp_path, monkeypatch):
    monkeypatch.setenv("MTL_TF_DATA_DIR", str(tmp_path / "cache"))
    expected = _write_cifar100(tmp_path / "src" / "cifar-100-python")
    tarball = tmp_path / "cifar-100-python.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-100-python", arcname="cifar-100-python")
    _, labels = load_numpy("cifar100", "train", path=tarball)
    assert labels["fine"].tolist() == expected["train"][1]


def test_cifar100_absent_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("MTL_TF_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    with pytest.raises(RuntimeError, match=r"CIFAR-100 is not present.*given-folder"):
        load_numpy("cifar100", "train", path=tmp_path / "given-folder")


@pytest.mark.parametrize("name", ["../escape.txt", "/tmp/absolute-escape.txt"])
def test_tar_path_traversal_is_refused_and_nothing_is_written(tmp_path, name):
    tarball = tmp_path / "evil.tar"
    with tarfile.open(tarball, "w") as tar:
        for member_name in ("fine.txt", name):
            info = tarfile.TarInfo(member_name)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"bad"))
    destination = tmp_path / "out"
    with pytest.raises(ValueError, match="Refusing to extract"):
        safe_extract(tarball, destination)
    assert not destination.exists()
    assert not (tmp_path / "escape.txt").exists()


def test_tar_symlink_is_refused(tmp_path):
    tarball = tmp_path / "link.tar"
    with tarfile.open(tarball, "w") as tar:
        info = tarfile.TarInfo("link")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(ValueError, match="link or device"):
        safe_extract(tarball, tmp_path / "out")


def test_atomic_path_leaves_nothing_when_the_write_fails(tmp_path):
    target = tmp_path / "file.bin"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole" and list(tmp_path.iterdir()) == [target]


def test_notmnist_option_reads_a_real_style_archive(tmp_path):
    from PIL import Image

    from mtl_tf.data import letters

    tarball = tmp_path / "notMNIST_large.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        for label, letter in enumerate("ABCDEFGHIJ"):
            for k in range(3):
                buffer = io.BytesIO()
                Image.fromarray(np.full((28, 28), label * 20 + k, np.uint8)).save(buffer, "PNG")
                info = tarfile.TarInfo(f"notMNIST_large/{letter}/font{k}.png")
                info.size = len(buffer.getvalue())
                tar.addfile(info, io.BytesIO(buffer.getvalue()))
        corrupt = tarfile.TarInfo("notMNIST_large/A/broken.png")
        corrupt.size = 4
        tar.addfile(corrupt, io.BytesIO(b"junk"))
    images, labels = letters.load_notmnist("train", tarball)
    assert len(images) == 30 and images.shape[1:] == (28, 28)  # the corrupt PNG skipped
    np.testing.assert_array_equal(images[:, 0, 0] // 20, labels)
