"""The model file: the state_dict plus the config that rebuilds it, loadable with
torch.load(weights_only=True)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import torch

from advlab.core.errors import BadFileError
from advlab.core.io import load_torch, save_torch
from advlab.models.core import Classifier, ModelConfig
from advlab.models.registry import build_model

CONFIG_KEYS = {field.name for field in fields(ModelConfig)} - {"options"}  # options: optional


def save_model(path: str | Path, model: Classifier) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_torch(path, {"config": model.config.as_dict(), "state_dict": state})


def load_model(path: str | Path, device: torch.device | str = "cpu") -> Classifier:
    blob = load_torch(path)
    if not is_model_file(blob):
        raise BadFileError(f"{path} is not a model file (expected config and state_dict)")
    return model_from_file(blob).to(device).eval()


def is_model_file(blob: object) -> bool:
    """Whether a loaded torch file holds what save_model writes: a checkpoint's own config
    (its training params, say) beside its state_dict is not a ModelConfig."""
    return (isinstance(blob, dict) and not {"config", "state_dict"} - set(blob)
            and isinstance(blob["config"], dict) and not CONFIG_KEYS - set(blob["config"]))


def model_from_file(blob: dict) -> Classifier:
    """The model save_model wrote, from the file's loaded contents."""
    model = build_model(ModelConfig.from_dict(blob["config"]))
    model.load_state_dict(blob["state_dict"])
    return model
