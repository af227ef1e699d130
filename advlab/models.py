"""The lab's CNN (Problem 3) and its parameter count by the lab's Table 1.3 formulas.

Output contract: `forward` returns logits (train with cross-entropy on logits, never on softmax
output); `predict_proba` returns the class probabilities the lab asks for (softmax of logits).
Normalization is the first layer, so callers pass pixels in [0, 1].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from advlab.errors import BadFileError


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model; saved beside its weights."""

    arch: str
    in_channels: int
    image_size: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        return cls(**{**d, "mean": tuple(d["mean"]), "std": tuple(d["std"])})


class Normalize(nn.Module):
    """(x - mean) / std per channel, with the training split's statistics as buffers."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class LabCNN(nn.Module):
    """Three 3x3 conv blocks (conv, BatchNorm, ReLU, 2x2 max-pool), then two linear layers."""

    widths = (32, 64, 128)
    hidden = 256
    precision = torch.float32  # the autocast dtype callers run it in (device.prepare_model)

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = [Normalize(config.mean, config.std)]
        channels, size = config.in_channels, config.image_size
        for width in self.widths:
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            channels, size = width, size // 2
        layers += [nn.Flatten(), nn.Linear(channels * size * size, self.hidden),
                   nn.ReLU(inplace=True), nn.Dropout(0.3),
                   nn.Linear(self.hidden, config.num_classes)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *body, head = self.layers
        for layer in body:
            x = layer(x)
        if torch.is_autocast_enabled(x.device.type):
            # The last layer in fp32: bf16 logits are spaced 0.0625 apart near 10, so two
            # classes could tie and argmax would pick by class index.
            with torch.autocast(x.device.type, enabled=False):
                return head(x.float())
        return head(x)

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self(x), dim=1)


ARCHITECTURES = {"lab_cnn": LabCNN}


def build_model(config: ModelConfig) -> LabCNN:
    if config.arch not in ARCHITECTURES:
        raise ValueError(f"unknown model {config.arch!r}; known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[config.arch](config)


def parameter_table(model: nn.Module) -> list[tuple[str, str, int]]:
    """(layer, Table 1.3 arithmetic, count) for every layer with parameters.

    Raises if the formulas and PyTorch's own count disagree, so the printed table is checked.
    """
    rows = []
    for name, layer in model.named_modules():
        if isinstance(layer, nn.Conv2d):
            k = layer.kernel_size[0]
            rows.append((f"{name} Conv2d", f"({layer.in_channels}·{k}²+1)·{layer.out_channels}",
                         (layer.in_channels * k * k + 1) * layer.out_channels))
        elif isinstance(layer, nn.Linear):
            rows.append((f"{name} Linear", f"({layer.in_features}+1)·{layer.out_features}",
                         (layer.in_features + 1) * layer.out_features))
        elif isinstance(layer, nn.BatchNorm2d):  # not in Table 1.3: a scale and a shift per channel
            rows.append((f"{name} BatchNorm2d", f"2·{layer.num_features}",
                         2 * layer.num_features))
    by_formula = sum(count for *_, count in rows)
    by_torch = sum(p.numel() for p in model.parameters())
    if by_formula != by_torch:
        raise AssertionError(f"Table 1.3 count {by_formula} != PyTorch count {by_torch}")
    return rows


def format_parameter_table(rows: list[tuple[str, str, int]]) -> str:
    width = max(len(r[0]) for r in rows)
    lines = [f"{layer:<{width}}  {formula:<22} = {count:>9,}" for layer, formula, count in rows]
    total = sum(r[2] for r in rows)
    return "\n".join([*lines, f"{'total':<{width}}  {'':<22} = {total:>9,}"])


def save_model(path: str | Path, model: LabCNN) -> None:
    """state_dict plus the config that rebuilds it: loadable with torch.load(weights_only=True)."""
    from advlab.io import save_torch

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_torch(path, {"config": model.config.as_dict(), "state_dict": state})


def load_model(path: str | Path, device: torch.device | str = "cpu") -> LabCNN:
    from advlab.io import load_torch

    blob = load_torch(path)
    if not isinstance(blob, dict) or {"config", "state_dict"} - set(blob):
        raise BadFileError(f"{path} is not a model file (expected config and state_dict)")
    model = build_model(ModelConfig.from_dict(blob["config"]))
    model.load_state_dict(blob["state_dict"])
    return model.to(device).eval()
