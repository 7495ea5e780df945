"""The paper's networks (CIFAR variants) and a small CNN for quick CPU runs.

- ``resnet18`` / ``resnet101``: the ImageNet ResNets with a 3x3 stride-1 64-channel stem and no
  max-pool (BasicBlock [2, 2, 2, 2], Bottleneck [3, 4, 23, 3]), Kaiming-normal (fan_out) conv
  init, BN weight 1 / bias 0, as in the authors' code. Their 4x4 average pool is an adaptive
  pool to 1x1 here: identical for 32x32 inputs (the last feature map is 4x4) and it also accepts
  28x28 inputs.
- ``densenet121``: the common CIFAR DenseNet (growth 32, blocks [6, 12, 24, 16], compression 0.5,
  3x3 stem with 2*growth channels, BN-ReLU-conv bottlenecks of 4*growth channels), with
  PyTorch's default init (that variant sets none) and the same adaptive final pool.
- ``cnn``: conv(32)-pool-conv(64)-pool-fc(128)-fc, no batch norm, for Fashion-MNIST on a CPU.

``width`` scales every channel count (and the DenseNet growth rate) so the deep nets can train
narrow on a CPU; scaled counts are rounded and never below ``MIN_CHANNELS``. At ``width=1`` the
parameter counts (10 classes, 3 input channels) are ResNet18 11,173,962, ResNet101 42,512,970,
DenseNet121 6,956,298.

Small CNN speed, measured with ``python -m tralgo.experiments.models`` (500 forward + backward +
SGD-momentum steps at batch size 8, 1 thread, after 20 warm-up steps; 2-core Intel Xeon CPU
shared with other jobs, 2026-11-28, three runs): 5.4-6.3 ms CPU time per step, i.e. one
Fashion-MNIST epoch (7500 steps) ~ 41-48 s of CPU time, which is what wall time approaches on an
uncontended core (not observed: the machine was never idle); at load ~10 wall time was
14-18 ms/step (106-134 s per epoch). The trainer's data indexing, augmentation and the TR wrapper add to this.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MODELS", "MIN_CHANNELS", "build_model", "count_parameters"]

MODELS = ("cnn", "resnet18", "resnet101", "densenet121")
MIN_CHANNELS = 4  # narrower layers stop being useful; width-scaled counts never go below this


def _scaled(channels: int, width: float) -> int:
    return max(MIN_CHANNELS, int(round(channels * width)))


# --------------------------------------------------------------------------------------------
# ResNet (CIFAR stem)
# --------------------------------------------------------------------------------------------

def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def _projection(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    """Identity when shapes match, else the 1x1-conv + BN projection shortcut."""
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False),
                         nn.BatchNorm2d(out_planes))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _projection(in_planes, planes * self.expansion, stride)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.shortcut = _projection(in_planes, planes * self.expansion, stride)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return torch.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, block, num_blocks: tuple[int, ...], num_classes: int, in_channels: int,
                 width: float):
        super().__init__()
        stem = _scaled(64, width)
        self.conv1 = _conv3x3(in_channels, stem)
        self.bn1 = nn.BatchNorm2d(stem)
        in_planes = stem
        stages = []
        for i, blocks in enumerate(num_blocks):
            planes = _scaled(64 * 2 ** i, width)
            stage_stride = 1 if i == 0 else 2
            layers = []
            for stride in [stage_stride] + [1] * (blocks - 1):
                layers.append(block(in_planes, planes, stride))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(in_planes, num_classes)
        self._init_weights()

    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return self.layer4(self.layer3(self.layer2(self.layer1(out))))

    def forward(self, x):
        return self.linear(torch.flatten(self.pool(self.features(x)), 1))


# --------------------------------------------------------------------------------------------
# DenseNet (CIFAR variant)
# --------------------------------------------------------------------------------------------

class DenseLayer(nn.Module):
    """BN-ReLU-conv1x1(4*growth) then BN-ReLU-conv3x3(growth); output concatenated to input."""

    def __init__(self, in_planes: int, growth: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x):
        out = self.conv1(torch.relu(self.bn1(x)))
        out = self.conv2(torch.relu(self.bn2(out)))
        return torch.cat([out, x], 1)


class Transition(nn.Module):
    def __init__(self, in_planes: int, out_planes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_planes)
        self.conv = nn.Conv2d(in_planes, out_planes, 1, bias=False)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x):
        return self.pool(self.conv(torch.relu(self.bn(x))))


class DenseNet(nn.Module):
    def __init__(self, num_blocks: tuple[int, ...], growth: int, num_classes: int,
                 in_channels: int, compression: float = 0.5):
        super().__init__()
        planes = 2 * growth
        self.conv1 = nn.Conv2d(in_channels, planes, 3, padding=1, bias=False)
        stages: list[nn.Module] = []
        for i, blocks in enumerate(num_blocks):
            stages.append(nn.Sequential(*[DenseLayer(planes + j * growth, growth)
                                          for j in range(blocks)]))
            planes += blocks * growth
            if i < len(num_blocks) - 1:
                out_planes = int(math.floor(planes * compression))
                stages.append(Transition(planes, out_planes))
                planes = out_planes
        self.stages = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(planes)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(planes, num_classes)

    def forward(self, x):
        out = torch.relu(self.bn(self.stages(self.conv1(x))))
        return self.linear(torch.flatten(self.pool(out), 1))


# --------------------------------------------------------------------------------------------
# Small CNN
# --------------------------------------------------------------------------------------------

class SmallCNN(nn.Module):
    """conv3x3(32)-ReLU-maxpool, conv3x3(64)-ReLU-maxpool, fc(128)-ReLU, fc(num_classes).

    No batch norm on purpose: the study is about gradient noise from small batches, and BN's
    batch statistics at batch size 8 would add a second, architecture-made noise source (and make
    train and eval behave differently); without BN the net is also cheaper per step.
    Feature maps are pooled to 7x7 before the classifier: a no-op (skipped) for 28x28 inputs,
    and what lets 32x32 (CIFAR) inputs through the same classifier.
    The layers run channels-last: on this CPU's oneDNN kernels a batch-8 training step then took
    4.7 and 6.7 ms of CPU time against 7.0 and 7.6 ms in NCHW (two sessions, each the median of
    5 interleaved runs of 100 steps, on a loaded machine; NCHW max-pooling is especially slow).
    """

    pooled_size = 7

    def __init__(self, num_classes: int, in_channels: int, width: float):
        super().__init__()
        c1, c2, hidden = _scaled(32, width), _scaled(64, width), _scaled(128, width)
        self.conv1 = nn.Conv2d(in_channels, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.fc1 = nn.Linear(c2 * self.pooled_size ** 2, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)
        self.to(memory_format=torch.channels_last)

    def forward(self, x):
        x = x.contiguous(memory_format=torch.channels_last)
        x = F.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = F.max_pool2d(torch.relu(self.conv2(x)), 2)
        if x.shape[-2:] != (self.pooled_size, self.pooled_size):
            x = F.adaptive_avg_pool2d(x, self.pooled_size)
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


# --------------------------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------------------------

_BUILDERS: dict[str, Callable[[int, int, float], nn.Module]] = {
    "cnn": lambda classes, ch, w: SmallCNN(classes, ch, w),
    "resnet18": lambda classes, ch, w: ResNet(BasicBlock, (2, 2, 2, 2), classes, ch, w),
    "resnet101": lambda classes, ch, w: ResNet(Bottleneck, (3, 4, 23, 3), classes, ch, w),
    "densenet121": lambda classes, ch, w: DenseNet((6, 12, 24, 16), _scaled(32, w), classes, ch),
}


def build_model(name: str, num_classes: int, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    """Build one of ``MODELS`` for ``num_classes`` classes and ``in_channels``-channel images."""
    if name not in _BUILDERS:
        raise ValueError(f"model name must be one of {', '.join(MODELS)}, got {name!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be an integer >= 1, got {in_channels!r}")
    if not (isinstance(width, (int, float)) and math.isfinite(width) and width > 0):
        raise ValueError(f"width must be a finite number > 0, got {width!r}")
    return _BUILDERS[name](num_classes, in_channels, float(width))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --------------------------------------------------------------------------------------------
# Timing of the small CNN (python -m tralgo.experiments.models)
# --------------------------------------------------------------------------------------------

def _time_training_steps(model: nn.Module, input_shape: tuple[int, ...], num_classes: int,
                         steps: int, batch_size: int) -> tuple[float, float]:
    """(wall, CPU) seconds per forward+backward+SGD step on random data, after a warm-up.

    CPU time is reported too because on a shared machine wall time includes waiting for a core.
    """
    import time

    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    inputs = torch.randn(batch_size, *input_shape)
    targets = torch.randint(0, num_classes, (batch_size,))

    def step():
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(inputs), targets).backward()
        optimizer.step()

    for _ in range(20):
        step()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def _main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    steps, batch_size, epoch_images = 500, 8, 60000
    wall, cpu = _time_training_steps(build_model("cnn", 10, in_channels=1), (1, 28, 28), 10,
                                     steps, batch_size)
    epoch_steps = epoch_images // batch_size
    print(f"cnn, 1x28x28, batch {batch_size}, 1 thread, {steps} steps: "
          f"{wall * 1e3:.2f} ms/step wall ({cpu * 1e3:.2f} ms CPU) -> one Fashion-MNIST epoch "
          f"({epoch_steps} steps) ~ {wall * epoch_steps:.0f} s wall ({cpu * epoch_steps:.0f} s CPU)")


if __name__ == "__main__":
    _main()
