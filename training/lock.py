"""One writer per run directory.

A second `mtl-tf train` on a run directory in use would write its checkpoints and history
over the first's. The lock is `flock` on a file inside the folder: the kernel drops it when
its process ends, however it ends, so a run killed with SIGKILL leaves nothing stuck and
resumes as before.
"""

import contextlib
import fcntl
import os
from pathlib import Path

LOCK_FILE = ".lock"


class FolderInUse(RuntimeError):
    """Raised when another process holds the folder."""


@contextlib.contextmanager
def hold(folder, argument="run_dir"):
    """Holds `folder` (created if missing) for this process; refuses at once, naming the
    holder's process id, if another process holds it. On leaving, the lock file goes, and
    the folder too if this call created it and nothing was written into it."""
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise FolderInUse(f"`{argument}` {str(folder)!r} is in use by another process (pid "
                              f"{holder}); wait for it to end or use another folder.") from None
        # The last holder may have removed the file between our open and our lock: such a
        # lock guards nothing, so try again on the file that is there now.
        try:
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    try:
        yield folder
    finally:
        os.unlink(path)
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty
