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


# A Python that never imports this project, started once per test process: each snippet
# runs there in a namespace of its own (TensorFlow's start-up is paid once, not per test).
_FRESH_PYTHON = r"""
import contextlib, io, json, sys, traceback
reply = sys.stdout
for line in sys.stdin:
    buffer, ok = io.StringIO(), True
    try:
        with contextlib.redirect_stdout(buffer):
            exec(compile(json.loads(line), "<snippet>", "exec"), {"__name__": "__main__"})
    except BaseException:
        ok = False
        buffer.write(traceback.format_exc())
    reply.write(json.dumps({"ok": ok, "stdout": buffer.getvalue()}) + "\n")
    reply.flush()
"""
_fresh = None


def run_python(code, timeout=300):
    """Runs `code` in a Python that has never imported this project; returns its stdout."""
    import atexit
    import json
    import select

    global _fresh
    if _fresh is None or _fresh.poll() is not None:
        _fresh = subprocess.Popen([sys.executable, "-c", _FRESH_PYTHON], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        atexit.register(_fresh.kill)
    _fresh.stdin.write(json.dumps(textwrap.dedent(code)) + "\n")
    _fresh.stdin.flush()
    ready, _, _ = select.select([_fresh.stdout], [], [], timeout)
    line = _fresh.stdout.readline() if ready else ""
    if not line:
        _fresh.kill()
        raise AssertionError(f"the fresh Python {'died' if ready else f'took over {timeout} s'}")
    result = json.loads(line)
    assert result["ok"], result["stdout"][-3000:]
    return result["stdout"]


def run_saved_model_roundtrip(model, path, x):
    """Exports `model`, loads the SavedModel in a fresh process that never imports this
    project, with both loaders a server uses (TF2's `tf.saved_model.load` and the TF1
    session loader of TF Serving and `saved_model_cli run`), calls every signature, and
    checks every output equals the in-memory model's. Returns the signature names."""
    import json

    import mtl_tf.export

    mtl_tf.export.save(model, path)
    np.save(f"{path}.inputs.npy", x)
    expected = {k: np.asarray(v) for k, v in model(x, training=False).items()}
    out = run_python(f"""
        import json, sys, numpy as np, tensorflow as tf
        path = {str(path)!r}
        x = np.load(path + ".inputs.npy")
        loaded = tf.saved_model.load(path)
        results = {{}}
        for name, signature in loaded.signatures.items():
            for key, value in signature(inputs=tf.constant(x)).items():
                results[f"tf2/{{name}}/{{key}}"] = value.numpy()
        with tf.compat.v1.Session(graph=tf.Graph()) as session:
            meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], path)
            for name, signature in meta.signature_def.items():
                if name.startswith("__"):
                    continue
                fetches = {{k: v.name for k, v in signature.outputs.items()}}
                feed = {{signature.inputs["inputs"].name: x}}
                for key, value in session.run(fetches, feed).items():
                    results[f"tf1/{{name}}/{{key}}"] = value
        np.savez(path + ".outputs.npz", **{{k.replace("/", "__"): v for k, v in results.items()}})
        assert not any(m.startswith(("mtl_tf", "zoo", "training")) for m in sys.modules)
        print(json.dumps(sorted(loaded.signatures)))
    """)
    signatures = json.loads(out.strip().splitlines()[-1])
    got = np.load(f"{path}.outputs.npz")
    want = {f"{loader}__serving_default__{task}": value for task, value in expected.items()
            for loader in ("tf1", "tf2")}
    want.update({f"{loader}__{task}__{task}": value for task, value in expected.items()
                 for loader in ("tf1", "tf2")})
    assert sorted(got.files) == sorted(want)
    for key, value in want.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
    return signatures
