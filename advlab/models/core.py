"""What every model shares: the config that rebuilds it, the normalization first layer and the
output contract (logits out, `predict_proba` for probabilities, the last layer in fp32)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model; saved beside its weights.

    `options` holds the architecture's own train params (wide_resnet: depth, width; fast_cnn:
    widths, whiten); lab_cnn has none, so model files written before options existed load."""

    arch: str
    in_channels: int
    image_size: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    options: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        return cls(**{**d, "mean": tuple(d["mean"]), "std": tuple(d["std"]),
                      "options": dict(d.get("options", {}))})


class Normalize(nn.Module):
    """(x - mean) / std per channel, with the training split's statistics as buffers."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """Images in [0, 1] in, logits out. A subclass gives `features` (normalization first) and
    `last_layer`, which runs in fp32 under autocast."""

    precision = torch.float32  # the autocast dtype callers run it in (device.prepare_model)

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def last_layer(self) -> nn.Module:
        raise NotImplementedError

    def fit_to_data(self, images: torch.Tensor) -> None:
        """Sets what a model computes from the training images (uint8) before training."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, head = self.features(x), self.last_layer()
        if torch.is_autocast_enabled(x.device.type):
            # The last layer in fp32: bf16 logits are spaced 0.0625 apart near 10, so two
            # classes could tie and argmax would pick by class index.
            with torch.autocast(x.device.type, enabled=False):
                return head(x.float())
        return head(x)

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self(x), dim=1)

