"""A quiet TensorFlow start-up on machines without a GPU.

TensorFlow's C++ side writes its start-up chatter straight to file descriptor 2 before
its logging is configured, so `TF_CPP_MIN_LOG_LEVEL` cannot hide it: "Could not find cuda
drivers", "oneDNN custom operations are on", the CPU-feature notice and, when the GPU
platform is probed, "failed call to cuInit: ... UNKNOWN ERROR (303)", an error that is
no error on a CPU machine. Every package of this project imports TensorFlow through
`import_tensorflow()` first: it captures descriptor 2 while TensorFlow is imported and
its devices listed (listing physical devices leaves logical devices configurable), then
writes back every line that is not one of those known notices, so real errors still show.
"""

import os
import sys
import tempfile

NOTICES = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "cudart_stub.cc",
    "failed call to cuInit",
    "oneDNN custom operations are on",
    "cpu_feature_guard.cc",
    "rebuild TensorFlow with the appropriate compiler flags",
)


def import_tensorflow():
    """Imports TensorFlow (once per process) with its start-up notices filtered out."""
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):  # no real descriptor (some notebooks)
        fd = None
    if fd is None:
        import tensorflow  # noqa: F401
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), fd)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
        capture.seek(0)
        kept = [line for line in capture.read().decode(errors="replace").splitlines(keepends=True)
                if not any(notice in line for notice in NOTICES)]
    if kept:
        sys.stderr.write("".join(kept))
        sys.stderr.flush()
