"""The model file: the state_dict plus the config that rebuilds it, loadable with
torch.load(weights_only=True)."""

from __future__ import annotations

from pathlib import Path

import torch

from advlab.core.errors import BadFileError
from advlab.core.io import load_torch, save_torch
from advlab.models.core import Classifier, ModelConfig
from advlab.models.registry import build_model


def save_model(path: str | Path, model: Classifier) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_torch(path, {"config": model.config.as_dict(), "state_dict": state})


def load_model(path: str | Path, device: torch.device | str = "cpu") -> Classifier:
    blob = load_torch(path)
    if not isinstance(blob, dict) or {"config", "state_dict"} - set(blob):
        raise BadFileError(f"{path} is not a model file (expected config and state_dict)")
    model = build_model(ModelConfig.from_dict(blob["config"]))
    model.load_state_dict(blob["state_dict"])
    return model.to(device).eval()
