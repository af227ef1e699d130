"""lab_cnn: the lab's Problem 3 network. Three 3x3 conv blocks (conv, BatchNorm, ReLU, 2x2
max-pool: 32, 64, 128 channels), then linear 256, ReLU, dropout 0.3 and linear to the classes."""

from __future__ import annotations

import torch
from torch import nn

from advlab.models.core import Classifier, ModelConfig, Normalize


class LabCNN(Classifier):
    widths = (32, 64, 128)
    hidden = 256

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        layers: list[nn.Module] = [Normalize(config.mean, config.std)]
        channels, size = config.in_channels, config.image_size
        for width in self.widths:
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            channels, size = width, size // 2
        layers += [nn.Flatten(), nn.Linear(channels * size * size, self.hidden),
                   nn.ReLU(inplace=True), nn.Dropout(0.3),
                   nn.Linear(self.hidden, config.num_classes)]
        self.layers = nn.Sequential(*layers)  # its indexes are the saved state_dict's keys

    def features(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = layer(x)
        return x

    def last_layer(self) -> nn.Module:
        return self.layers[-1]
