"""PyTorch eager versions of two benchmark workloads, run by `benchmarks.run` as the peer.

    python benchmarks/torch_peers.py bn_mlp DATA_DIR STEPS SEEDS
    python benchmarks/torch_peers.py resnet20 BATCH STEPS
    python benchmarks/torch_peers.py conv_layers BATCH REPEATS SIZExSIZExCHANNELS...

Written the way a PyTorch user writes them (one run per seed, eager, `torch.optim.SGD`), as
../shared/acceptance/peers does. Prints one JSON line. Needs only torch and numpy, so it runs in
any environment that has them (torch is not a dependency of this project).
"""

import gzip
import json
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _idx(path: str) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _mlp(batchnorm: bool) -> nn.Module:
    layers: list[nn.Module] = []
    width = 784
    for _ in range(3):
        layers.append(nn.Linear(width, 100))
        if batchnorm:
            layers.append(nn.BatchNorm1d(100))
        layers.append(nn.Sigmoid())
        width = 100
    return nn.Sequential(*layers, nn.Linear(width, 10))


def bn_mlp(data_dir: str, steps: int, seeds: int) -> dict:
    """The BatchNorm paper's MLP without and with BatchNorm, `seeds` runs of each in turn."""
    start = time.perf_counter()

    def images(name: str) -> torch.Tensor:
        return torch.tensor(
            _idx(f"{data_dir}/{name}").reshape(-1, 784) / 255.0, dtype=torch.float32
        )

    def labels(name: str) -> torch.Tensor:
        return torch.tensor(_idx(f"{data_dir}/{name}").astype(np.int64))

    x_train, y_train = images("train-images-idx3-ubyte.gz"), labels("train-labels-idx1-ubyte.gz")
    x_test, y_test = images("t10k-images-idx3-ubyte.gz"), labels("t10k-labels-idx1-ubyte.gz")
    data_s = time.perf_counter() - start
    result = {"steps": steps, "seeds": seeds, "data_s": round(data_s, 3)}
    for variant, batchnorm in (("baseline", False), ("batchnorm", True)):
        variant_start = time.perf_counter()
        accuracy = []
        for seed in range(seeds):
            torch.manual_seed(seed)
            model = _mlp(batchnorm)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
            generator = torch.Generator().manual_seed(seed)
            order, position = torch.randperm(60000, generator=generator), 0
            model.train()
            for _ in range(steps):
                if position + 60 > 60000:
                    order, position = torch.randperm(60000, generator=generator), 0
                batch = order[position : position + 60]
                position += 60
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(model(x_train[batch]), y_train[batch]).backward()
                optimizer.step()
            model.eval()
            with torch.no_grad():
                accuracy.append(float((model(x_test).argmax(1) == y_test).float().mean()))
        result[variant] = {
            "wall_s": round(time.perf_counter() - variant_start, 3),
            "test_accuracy_mean": float(np.mean(accuracy)),
        }
    result["wall_s"] = round(time.perf_counter() - start, 3)
    return result


class _Block(nn.Module):
    def __init__(self, channels_in: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.pad, self.stride = channels - channels_in, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.stride != 1 or self.pad:  # option A: subsample and zero-pad the channels
            x = F.pad(
                x[:, :, :: self.stride, :: self.stride],
                (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2),
            )
        return F.relu(y + x)


class _ResNet20(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16)
        blocks, channels_in = [], 16
        for stage, channels in enumerate((16, 32, 64)):
            for block in range(3):
                blocks.append(_Block(channels_in, channels, 2 if block == 0 and stage else 1))
                channels_in = channels
        self.blocks, self.fc = nn.Sequential(*blocks), nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blocks(F.relu(self.bn(self.conv(x)))).mean((2, 3)))


def resnet20(batch: int, steps: int) -> dict:
    """Training images/s of ResNet-20 (float32, channels-last) on random data, after 5 warm-up steps."""
    model = _ResNet20().to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, 3, 32, 32).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    for _ in range(5):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return {
        "batch_size": batch,
        "steps": steps,
        "images_per_sec": batch * steps / (time.perf_counter() - start),
    }


def conv_layers(batch: int, repeats: int, names: list[str]) -> dict:
    """Milliseconds of 3x3 conv layers named "32x32x16" (input size and channels, as many out):
    forward, and forward + gradients of the input and the kernel (of sum(y^2)), channels-last,
    mean of `repeats` after 3 warm-ups."""

    def mean_ms(fn: Callable[[], object]) -> float:
        for _ in range(3):
            fn()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - start) / repeats * 1000

    layers = {}
    for name in names:
        size, _, channels = map(int, name.split("x"))
        conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        conv = conv.to(memory_format=torch.channels_last)
        x = torch.randn(batch, channels, size, size).to(memory_format=torch.channels_last)
        x.requires_grad_(True)

        def forward(conv: nn.Module = conv, x: torch.Tensor = x) -> None:
            with torch.no_grad():
                conv(x)

        def gradients(conv: nn.Module = conv, x: torch.Tensor = x) -> None:
            conv(x).square().sum().backward()

        layers[name] = {
            "forward_ms": mean_ms(forward),
            "gradients_ms": mean_ms(gradients),
        }
    return {"batch_size": batch, "layers": layers}


if __name__ == "__main__":
    name, *values = sys.argv[1:]
    if name == "bn_mlp":
        out = bn_mlp(values[0], int(values[1]), int(values[2]))
    elif name == "conv_layers":
        out = conv_layers(int(values[0]), int(values[1]), values[2:])
    else:
        out = resnet20(int(values[0]), int(values[1]))
    print(
        json.dumps({"torch_version": torch.__version__, "threads": torch.get_num_threads(), **out})
    )
