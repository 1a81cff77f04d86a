"""Shared test helpers: small real data, and a save-reload-compare check."""

import functools
import subprocess
import sys
import textwrap

import numpy as np

from mtl_tf.data import load_numpy


@functools.lru_cache(maxsize=None)
def two_task_batch(n=256):
    """n MNIST + n Fashion-MNIST test images pooled: each labelled for its own task only."""
    x1, y1 = load_numpy("mnist", "test")
    x2, y2 = load_numpy("fashion_mnist", "test")
    x = np.concatenate([x1[:n], x2[:n]])[..., None].astype(np.float32) / 255.0
    y = {"mnist": np.concatenate([y1[:n], -np.ones(n, np.int64)]),
         "fashion_mnist": np.concatenate([-np.ones(n, np.int64), y2[:n]])}
    return x, y


@functools.lru_cache(maxsize=None)
def pair_batch(n=256):
    """n MNIST test pairs of paper 003 (0..255 pixels, N x 2 x 14 x 14) and their labels
    `compare`, `digit_a`, `digit_b`."""
    return load_numpy("mnist_pairs", "test", n=n, seed=0)


def run_python(code, timeout=300):
    """Runs `code` in a fresh Python that has not imported this project; returns stdout."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def run_saved_model_roundtrip(model, path, x):
    """Exports `model`, loads the SavedModel in a fresh process that never imports this
    project, and checks every task's output equals the in-memory model's."""
    import mtl_tf.export

    mtl_tf.export.save(model, path)
    np.save(f"{path}.inputs.npy", x)
    expected = {k: np.asarray(v) for k, v in model(x, training=False).items()}
    out = run_python(f"""
        import sys, numpy as np, tensorflow as tf
        loaded = tf.saved_model.load({str(path)!r})
        x = np.load({str(path)!r} + ".inputs.npy")
        outputs = loaded.signatures["serving_default"](inputs=tf.constant(x))
        np.savez({str(path)!r} + ".outputs.npz", **{{k: v.numpy() for k, v in outputs.items()}})
        assert not any(m.startswith(("mtl_tf", "zoo", "training")) for m in sys.modules)
        print(sorted(loaded.signatures))
    """)
    got = np.load(f"{path}.outputs.npz")
    assert sorted(got.files) == sorted(expected)
    for task, value in expected.items():
        np.testing.assert_allclose(got[task], value, rtol=1e-5, atol=1e-6)
    return out
