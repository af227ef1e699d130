"""preact_resnet18: the PreActResNet-18 of Wong, Rice & Kolter 2020 (fast adversarial training;
He et al. 2016's pre-activation blocks), and the pre-activation block wide_resnet shares.

Bias-free convolutions throughout (each is followed by BatchNorm); global average pooling, so
any image size works (CIFAR's 32x32 ends at 4x4, Fashion-MNIST's 28x28 at 4x4 too).
"""

from __future__ import annotations

import torch
from torch import nn

from advlab.models.core import Classifier, ModelConfig, Normalize


class PreActBlock(nn.Module):
    """BN, ReLU, 3x3 conv (stride), BN, ReLU, 3x3 conv, plus the shortcut: the input itself, or
    a 1x1 conv of the activated input when the shape changes."""

    def __init__(self, channels: int, width: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, width, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.shortcut = (nn.Conv2d(channels, width, 1, stride, bias=False)
                         if stride != 1 or channels != width else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv2(torch.relu(self.bn2(self.conv1(out))))
        return out + shortcut


class PreActNet(Classifier):
    """Normalization, a 3x3 stem conv, stages of pre-activation blocks (the first block of each
    stage strides), then BN, ReLU, global average pooling and a linear layer."""

    def __init__(self, config: ModelConfig, stem: int,
                 stages: list[tuple[int, int, int]]):  # (width, blocks, stride) per stage
        super().__init__(config)
        self.normalize = Normalize(config.mean, config.std)
        self.stem = nn.Conv2d(config.in_channels, stem, 3, padding=1, bias=False)
        blocks, channels = [], stem
        for width, count, stride in stages:
            for i in range(count):
                blocks.append(PreActBlock(channels, width, stride if i == 0 else 1))
                channels = width
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(channels)
        self.head = nn.Linear(channels, config.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(self.normalize(x)))
        return torch.relu(self.bn(x)).mean((2, 3))

    def last_layer(self) -> nn.Module:
        return self.head


def preact_resnet18(config: ModelConfig) -> PreActNet:
    return PreActNet(config, 64, [(64, 2, 1), (128, 2, 2), (256, 2, 2), (512, 2, 2)])
