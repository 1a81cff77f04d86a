"""Local process clusters: `mtl-tf train --workers K` (MultiWorkerMirroredStrategy over a
`TF_CONFIG` cluster on loopback) and `mtl-tf tune --workers K` share these."""

import json
import os
import signal
import socket
import subprocess
import time


def free_ports(count):
    """`count` free TCP ports on the loopback interface (found, never hard-coded)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def stop(processes, grace=20):
    """SIGINT to every process still running, then SIGKILL after `grace` seconds."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    for process in processes:
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def tf_config(workers, index):
    """The `TF_CONFIG` of worker `index` in a cluster of the loopback addresses `workers`."""
    return json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})


def run_training_cluster(command, count, log=print):
    """Runs `command` as `count` workers of one MultiWorkerMirroredStrategy cluster on
    this machine and waits for them. The chief (worker 0) prints; a worker that fails
    stops the others, and its error is raised. Ctrl-C stops them all."""
    workers = [f"127.0.0.1:{port}" for port in free_ports(count)]
    log(f"{count} workers on {', '.join(workers)}; worker 0 is the chief")
    processes = []
    try:
        for index in range(count):
            env = {**os.environ, "TF_CONFIG": tf_config(workers, index)}
            quiet = {} if index == 0 else {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
            processes.append(subprocess.Popen(command, env=env, **quiet))
        while any(p.poll() is None for p in processes):
            failed = [i for i, p in enumerate(processes) if p.poll() not in (None, 0)]
            if failed:
                index = failed[0]
                error = processes[index].stderr.read().decode()[-2000:] if index else ""
                raise RuntimeError(f"Worker {index} ended with code {processes[index].returncode}; "
                                   f"the other workers were stopped. {error}".strip())
            time.sleep(0.2)
        codes = [p.returncode for p in processes]
        if any(codes):
            raise RuntimeError(f"The workers ended with codes {codes}.")
    finally:
        stop(processes)
