"""The synthetic dataset: learnable generated images, written in the CIFAR-10 on-disk format."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from advlab.core.io import write_json
from advlab.data.formats import CIFAR_DIR, dataset_folder, holds_files, md5, write_cifar_batches
from advlab.data.images import ImageSet

SYNTHETIC_CLASSES = ("square", "disc", "ring", "cross", "h-bar",
                     "v-bar", "diagonal", "frame", "dots", "triangle")


def synthetic_images(n: int, seed: int) -> ImageSet:
    """n 3x32x32 images of 10 classes: a class-specific shape in a class-specific colour, at a
    random position and size, on a random dark background, plus pixel noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    labels = labels[torch.randperm(n, generator=g)]
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    cy, cx = (torch.rand(2, n, 1, 1, generator=g) * 12 + 10).unbind(0)
    r = torch.rand(n, 1, 1, generator=g) * 4 + 5
    dy, dx = (yy - cy) / r, (xx - cx) / r
    masks = torch.stack([
        (dy.abs() < 1) & (dx.abs() < 1),                              # square
        dy**2 + dx**2 < 1,                                            # disc
        ((dy**2 + dx**2) < 1) & ((dy**2 + dx**2) > 0.4),              # ring
        ((dy.abs() < 0.3) | (dx.abs() < 0.3)) & (dy.abs() < 1) & (dx.abs() < 1),  # cross
        (dy.abs() < 0.3) & (dx.abs() < 1.3),                          # h-bar
        (dx.abs() < 0.3) & (dy.abs() < 1.3),                          # v-bar
        ((dy - dx).abs() < 0.35) & (dy.abs() < 1),                    # diagonal
        (dy.abs() < 1) & (dx.abs() < 1) & ((dy.abs() > 0.6) | (dx.abs() > 0.6)),  # frame
        ((dy - 0.5)**2 + (dx - 0.5)**2 < 0.15) | ((dy + 0.5)**2 + (dx + 0.5)**2 < 0.15),  # dots
        (dy < 1) & (dy > -1) & (dx.abs() < (dy + 1) / 2),             # triangle
    ], 1)[torch.arange(n), labels]
    palette = torch.tensor([[1, .2, .2], [.2, 1, .2], [.3, .3, 1], [1, 1, .2], [1, .2, 1],
                            [.2, 1, 1], [1, .6, .2], [.6, .2, 1], [.9, .9, .9], [.5, 1, .5]])
    mix = torch.rand(n, 1, generator=g) * 0.6  # share of a random colour: colour alone is a hint
    colour = (1 - mix) * palette[labels] + mix * torch.rand(n, 3, generator=g)
    background = torch.rand(n, 3, 1, 1, generator=g) * 0.5
    img = torch.where(masks.unsqueeze(1), colour[:, :, None, None], background)
    img = img + 0.15 * torch.randn(img.shape, generator=g)
    images = (img.clamp(0, 1) * 255).round().to(torch.uint8)
    return ImageSet(images, labels, SYNTHETIC_CLASSES)


SYNTHETIC_SEED = 12345  # the generated dataset is fixed data, independent of base.seed
SYNTHETIC_RECORD = "generated.json"  # what was generated, and the md5 of each file written


def fetch_synthetic(raw: Path, n_train: int, n_test: int, seed: int = SYNTHETIC_SEED) -> None:
    """Generates the set into raw/synthetic/, unless the files there are this very set."""
    root = dataset_folder(raw, "synthetic")
    folder, record = root / CIFAR_DIR, root / SYNTHETIC_RECORD
    wanted = {"train": n_train, "test": n_test, "seed": seed}
    if record.is_file():
        done = json.loads(record.read_text())
        if done.get("params") == wanted and done.get("md5") and holds_files(folder, done["md5"]):
            return
    write_cifar_batches(folder, synthetic_images(n_train, seed), synthetic_images(n_test, seed + 1))
    files = {p.name: md5(p) for p in sorted(folder.iterdir()) if not p.name.startswith(".")}
    write_json(record, {"params": wanted, "md5": files})
