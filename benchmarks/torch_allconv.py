"""The outside peer of the speed record: paper 000's all-convolution net with a head per
task (`zoo.build("allconv", tasks={"mnist": 10, "shifted": 10}, form="heads")`, 108,660
parameters) written once in PyTorch, trained as the Trainer trains it (Adam 1e-3, the
sum of the two tasks' cross-entropies, shuffled batches).

    python benchmarks/torch_allconv.py DATA.npz EPOCHS BATCH [--channels-last]

Run by `benchmarks.record` with the benchmark environment's Python (PyTorch is a
benchmark-only extra, `requirements-bench.txt`); it never imports this project. Trains a
warm-up epoch, then EPOCHS timed epochs, and prints one JSON line: the seconds of each
timed epoch, the process's peak resident memory (MB) and its resident memory before
the first step.
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


def main(argv):
    path, epochs, batch = argv[0], int(argv[1]), int(argv[2])
    channels_last = "--channels-last" in argv
    data = np.load(path)
    x = torch.from_numpy(data["x"]).permute(0, 3, 1, 2).contiguous()  # N x 1 x 28 x 28
    ys = [torch.from_numpy(data[k]) for k in ("mnist", "shifted")]
    torch.manual_seed(0)
    model = AllConv()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)  # Keras's epsilon
    loss = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(0)

    def epoch():
        model.train()
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch):
            idx = order[start:start + batch]
            optimizer.zero_grad(set_to_none=True)
            outputs = model(x[idx])
            total = sum(loss(o, y[idx]) for o, y in zip(outputs, ys))
            total.backward()
            optimizer.step()

    ready_rss = status_mb("VmRSS")  # imported, data and net in memory, nothing trained yet
    epoch()  # warm-up
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        epoch()
        seconds.append(time.perf_counter() - start)
    print(json.dumps({"seconds": seconds, "peak_rss_mb": status_mb("VmHWM"), "ready_rss_mb": ready_rss,
                      "params": sum(p.numel() for p in model.parameters()) + sum(
                          b.numel() for n, b in model.named_buffers() if "num_batches" not in n),
                      "threads": torch.get_num_threads(), "torch": torch.__version__}))


if __name__ == "__main__":
    main(sys.argv[1:])
