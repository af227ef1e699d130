"""Shared tiny data: generated, seeded, a few hundred images; the suite runs offline in minutes."""

from __future__ import annotations

import pytest
import torch

from advlab.data import ImageSet
from advlab.datasets import synthetic_images
from advlab.models import LabCNN, build_model
from advlab.params import Train
from advlab.train import fit, make_optimizer, model_config

torch.set_num_threads(1)  # tiny models gain nothing from threads, and a busy machine loses


@pytest.fixture(scope="session")
def tiny_sets() -> dict[str, ImageSet]:
    """Disjoint synthetic train (600), val (200) and test (200) sets of 3x32x32 images."""
    images = synthetic_images(1000, seed=7)
    index = torch.arange(1000)
    return {"train": images.subset(index[:600]), "val": images.subset(index[600:800]),
            "test": images.subset(index[800:])}


def train_tiny(sets: dict[str, ImageSet], epochs: int = 2, seed: int = 0, **overrides) -> tuple:
    """A LabCNN trained on the tiny sets; returns (model, history)."""
    cfg = Train(epochs=epochs, batch_size=32, **overrides)
    torch.manual_seed(seed)
    model = build_model(model_config("lab_cnn", sets["train"]))
    history = fit(model, make_optimizer(model, cfg), sets["train"], sets["val"], cfg, seed,
                  eval_batch_size=128)
    return model.eval(), history


@pytest.fixture(scope="session")
def trained_model(tiny_sets) -> LabCNN:
    """A small model trained for two epochs on the tiny sets (shared: treat as read-only)."""
    model, _ = train_tiny(tiny_sets)
    return model
