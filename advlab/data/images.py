"""Images as tensors: uint8 (N, C, H, W) pixels and int64 labels, split once, indexed in batches."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from advlab.core.errors import BadFileError
from advlab.core.io import load_torch, save_torch
from advlab.params.fields import ParamsError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ImageSet:
    images: torch.Tensor  # uint8, (N, C, H, W), pixel values 0..255
    labels: torch.Tensor  # int64, (N,), values in range(len(classes))
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != self.images.shape[:1]:
            raise ValueError(f"labels must be int64 ({len(self.images)},), got "
                             f"{self.labels.dtype} {tuple(self.labels.shape)}")
        if len(self.labels) and not 0 <= int(self.labels.min()) <= int(self.labels.max()) < len(
            self.classes
        ):
            raise ValueError(f"labels must lie in 0..{len(self.classes) - 1}, got "
                             f"{int(self.labels.min())}..{int(self.labels.max())}")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, index: torch.Tensor) -> ImageSet:
        return ImageSet(self.images[index], self.labels[index], self.classes)

    def to(self, device: torch.device) -> ImageSet:
        return ImageSet(self.images.to(device), self.labels.to(device), self.classes)

    def save(self, path: str | Path) -> None:
        save_torch(path, {"images": self.images.cpu(), "labels": self.labels.cpu(),
                          "classes": list(self.classes)})

    @classmethod
    def load(cls, path: str | Path) -> ImageSet:
        blob = load_torch(path)
        if not (isinstance(blob, dict) and {"images", "labels", "classes"} <= set(blob)
                and isinstance(blob["images"], torch.Tensor)
                and isinstance(blob["labels"], torch.Tensor)
                and isinstance(blob["classes"], list | tuple)):
            raise BadFileError(f"{path} is not a split file (expected images and labels "
                               "tensors and a list of classes)")
        try:
            return cls(blob["images"], blob["labels"], tuple(blob["classes"]))
        except ValueError as err:
            raise BadFileError(f"{path}: {err}") from None


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [0, 1]; normalization is the model's first layer."""
    return images.float().div_(255)


def stratified_order(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random permutation in which every prefix holds each class in proportion: within ±1
    image where the classes are of one size (CIFAR-10, Fashion-MNIST), close to it otherwise.

    Each image gets the fraction (rank within its class + 0.5) / class size, ranks drawn at
    random; sorting by that fraction interleaves the classes evenly.
    """
    perm = torch.randperm(len(labels), generator=generator)
    shuffled = labels[perm]
    counts = torch.bincount(shuffled)
    by_class = torch.argsort(shuffled, stable=True)
    class_start = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(shuffled)
    rank[by_class] = torch.arange(len(shuffled)) - class_start[shuffled[by_class]]
    fraction = (rank.double() + 0.5) / counts[shuffled].double()
    return perm[torch.argsort(fraction, stable=True)]


def split_train_val(
    official_train: ImageSet, train_size: int, val_size: int, seed: int
) -> tuple[ImageSet, ImageSet]:
    """Disjoint, stratified, seeded train and validation sets drawn from the official train set."""
    if train_size + val_size > len(official_train):
        raise ParamsError(  # data.verify: false, so params could not know the size
            f"data.train_size ({train_size}) + data.val_size ({val_size}) exceeds the "
            f"{len(official_train)} images of the official training set"
        )
    order = stratified_order(official_train.labels, torch.Generator().manual_seed(seed))
    val = official_train.subset(order[:val_size].sort().values)
    train = official_train.subset(order[val_size : val_size + train_size].sort().values)
    return train, val


def batches(n: int, batch_size: int, generator: torch.Generator | None = None,
            device: torch.device | str = "cpu") -> Iterator[torch.Tensor]:
    """Index tensors covering range(n) in batches; shuffled when a generator is given."""
    order = (torch.randperm(n, generator=generator) if generator is not None
             else torch.arange(n)).to(device)
    yield from order.split(batch_size)


def load_splits(folder: str | Path, names: tuple[str, ...] = SPLITS) -> dict[str, ImageSet]:
    return {name: ImageSet.load(Path(folder) / f"{name}.pt") for name in names}
