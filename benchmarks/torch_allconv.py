"""The outside peer of the speed record: paper 000's all-convolution net with a head per
task (`zoo.build("allconv", tasks={"mnist": 10, "shifted": 10}, form="heads")`, 108,660
parameters) written once in PyTorch, trained as the Trainer trains it (Adam 1e-3, the
sum of the two tasks' cross-entropies, shuffled batches).

    python benchmarks/torch_allconv.py DATA.npz EPOCHS BATCH [--channels-last]
        [--feed permuted|gather] [--adam fused|loop|foreach] [--threads N] [--profile STEPS]

How it is fed, each choice measured by `benchmarks.torch_peer` (the defaults are the
fastest there): `--feed permuted` copies the data once per epoch in the shuffled order
(in the net's memory layout) and slices batches off it in order; `gather` indexes every
batch out of the data with the epoch's shuffled indices, the same batches (the peer's
first version, a quarter slower). `--adam` picks PyTorch's Adam implementation (the
`fused` kernel, the for-loop over tensors, or `foreach`). `--threads` sets
`torch.set_num_threads` (default: PyTorch's own, the physical cores).

Run by `benchmarks.record` with the benchmark environment's Python (PyTorch is a
benchmark-only extra, `requirements-bench.txt`); it never imports this project. Trains a
warm-up epoch, then EPOCHS timed epochs, and prints one JSON line: the seconds of each
timed epoch, the process's peak resident memory (MB) and its resident memory before
the first step. With `--profile STEPS` it instead prints, after the warm-up, each
PyTorch op's own CPU time per step (ms) over STEPS steps (`torch.profiler`), for a
comparison with the Trainer's profile in `benchmarks/results.md`.
"""

import json
import sys
import time

import numpy as np
import torch
from torch import nn


def status_mb(key):
    """A memory figure of this process from /proc/self/status, in MB: VmHWM its peak
    resident memory (`getrusage`'s maxrss would include the parent's, which Linux carries
    across exec), VmRSS its resident memory now."""
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return None


def block(cin, cout, kernel, stride=1, padding=1):
    # Keras's Conv2D keeps its bias before batch norm, and its BatchNormalization(momentum
    # 0.9) is PyTorch's momentum 0.1; Keras's epsilon is 1e-3.
    return [nn.Conv2d(cin, cout, kernel, stride, padding), nn.BatchNorm2d(cout, eps=1e-3, momentum=0.1), nn.ReLU()]


class AllConv(nn.Module):
    def __init__(self, tasks=2, classes=10, c1=32, c2=64):
        super().__init__()
        self.trunk = nn.Sequential(*block(1, c1, 3), *block(c1, c1, 3, 2), *block(c1, c2, 3),
                                   *block(c2, c2, 3, 2), *block(c2, c2, 3, padding=0), *block(c2, c2, 1, padding=0))
        self.heads = nn.ModuleList(nn.Conv2d(c2, classes, 1) for _ in range(tasks))

    def forward(self, x):
        z = self.trunk(x)
        return [head(z).mean(dim=(2, 3)) for head in self.heads]


def _option(argv, name, default):
    return argv[argv.index(name) + 1] if name in argv else default


def main(argv):
    path, epochs, batch = argv[0], int(argv[1]), int(argv[2])
    channels_last = "--channels-last" in argv
    feed, adam = _option(argv, "--feed", "permuted"), _option(argv, "--adam", "fused")
    if "--threads" in argv:
        torch.set_num_threads(int(_option(argv, "--threads", 0)))
    data = np.load(path)
    x = torch.from_numpy(data["x"]).permute(0, 3, 1, 2).contiguous()  # N x 1 x 28 x 28
    ys = [torch.from_numpy(data[k]) for k in ("mnist", "shifted")]
    torch.manual_seed(0)
    model = AllConv()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    kind = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}[adam]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7, **kind)  # Keras's epsilon
    loss = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(0)

    layout = torch.channels_last if channels_last else torch.contiguous_format

    def epoch(steps=None):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        if feed == "permuted":
            xs, targets = x[order].contiguous(memory_format=layout), [y[order] for y in ys]
        for start in range(0, len(x) if steps is None else steps * batch, batch):
            if feed == "permuted":
                images, labels = xs[start:start + batch], [y[start:start + batch] for y in targets]
            else:
                idx = order[start:start + batch]
                images, labels = x[idx], [y[idx] for y in ys]
            optimizer.zero_grad(set_to_none=True)
            outputs = model(images)
            total = sum(loss(o, y) for o, y in zip(outputs, labels))
            total.backward()
            optimizer.step()

    ready_rss = status_mb("VmRSS")  # imported, data and net in memory, nothing trained yet
    epoch()  # warm-up
    if "--profile" in argv:
        steps = int(_option(argv, "--profile", 50))
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
            epoch(steps)
        ops = {e.key: e.self_cpu_time_total / 1000 / steps for e in profile.key_averages()}
        print(json.dumps({"ms_per_step_by_op": dict(sorted(ops.items(), key=lambda kv: -kv[1])[:20]),
                          "steps": steps, "channels_last": channels_last}))
        return
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        epoch()
        seconds.append(time.perf_counter() - start)
    print(json.dumps({"seconds": seconds, "peak_rss_mb": status_mb("VmHWM"), "ready_rss_mb": ready_rss,
                      "params": sum(p.numel() for p in model.parameters()) + sum(
                          b.numel() for n, b in model.named_buffers() if "num_batches" not in n),
                      "threads": torch.get_num_threads(), "torch": torch.__version__, "feed": feed, "adam": adam,
                      "channels_last": channels_last, "mkldnn": torch.backends.mkldnn.is_available(),
                      "cpu_capability": torch.backends.cpu.get_cpu_capability()}))


if __name__ == "__main__":
    main(sys.argv[1:])
