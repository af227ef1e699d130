"""fast_cnn: an airbench-class fast network (Jordan 2024, airbench94's shape) in this project's
own code.

Normalization, a 2x2 conv with 2·C·4 outputs and GELU, then one block per entry of
train.widths (3x3 conv, 2x2 max-pool, BatchNorm, GELU, 3x3 conv, BatchNorm, GELU; bias-free
convs), global max-pooling and a bias-free linear layer. With train.whiten the first conv is a
whitening layer computed from the training images' 2x2 patches (the eigenvectors of their
covariance scaled by 1/sqrt(eigenvalue + eps), and their negatives) and frozen; its bias
still learns. The table of parameters marks the frozen weight.
"""

from __future__ import annotations

import torch
from torch import nn

from advlab.core.errors import InputError
from advlab.models.core import Classifier, ModelConfig, Normalize

PATCH = 2  # the whitening kernel
WHITEN_EPS = 5e-4  # added to each eigenvalue (normalized pixels): bounds the gain of noise
WHITEN_IMAGES = 5000  # the patch covariance comes from the first images of the training split
CHUNK = 500  # images per covariance update (bounds the unfolded patches' memory)


class ConvBlock(nn.Sequential):
    def __init__(self, channels: int, width: int):
        super().__init__(
            nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.MaxPool2d(2),
            nn.BatchNorm2d(width), nn.GELU(),
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.GELU())


class FastCNN(Classifier):
    def __init__(self, config: ModelConfig):
        super().__init__(config)
        widths, whiten = tuple(config.options["widths"]), config.options["whiten"]
        size = config.image_size - PATCH + 1
        for _ in widths:
            size //= 2
        if size < 1:
            raise InputError(f"train.widths: {len(widths)} blocks halve {config.image_size}x"
                             f"{config.image_size} images below one pixel; use fewer")
        self.normalize = Normalize(config.mean, config.std)
        stem = 2 * config.in_channels * PATCH**2
        self.whiten = nn.Conv2d(config.in_channels, stem, PATCH)
        self.whiten.weight.requires_grad_(not whiten)
        channels, blocks = stem, []
        for width in widths:
            blocks.append(ConvBlock(channels, width))
            channels = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(channels, config.num_classes, bias=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.gelu(self.whiten(self.normalize(x)))
        return self.blocks(x).amax((2, 3))

    def last_layer(self) -> nn.Module:
        return self.head

    @torch.no_grad()
    def fit_to_data(self, images: torch.Tensor) -> None:
        if not self.config.options["whiten"]:
            return
        self.whiten.weight.copy_(whitening_filters(self.normalize, images[:WHITEN_IMAGES]))
        self.whiten.bias.zero_()


def whitening_filters(normalize: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(2·C·k², C, k, k) filters that map the images' k x k patches to decorrelated unit
    variance: the patch covariance's eigenvectors / sqrt(eigenvalue + eps), then negated.
    Normalized pixels have mean about 0, so the second moment stands for the covariance."""
    c = images.shape[1]
    dim = c * PATCH**2
    moment = torch.zeros(dim, dim, dtype=torch.float64, device=images.device)
    count = 0
    for chunk in images.split(CHUNK):
        x = normalize(chunk.float() / 255)
        patches = x.unfold(2, PATCH, 1).unfold(3, PATCH, 1)  # n, c, h', w', k, k
        flat = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, dim).double()
        moment += flat.T @ flat
        count += len(flat)
    eigenvalues, eigenvectors = torch.linalg.eigh(moment / count)
    filters = (eigenvectors.T / (eigenvalues[:, None] + WHITEN_EPS).sqrt()).flip(0)
    filters = filters.reshape(dim, c, PATCH, PATCH).float()
    return torch.cat([filters, -filters])
