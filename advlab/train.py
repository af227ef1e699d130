"""Training: Adam on cross-entropy of logits, data as tensors on the device, batched by indexing."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from advlab.attacks import adversarial_batch
from advlab.data import ImageSet, batches, to_float
from advlab.device import autocast
from advlab.distributed import SINGLE, Ranks, mean_across_ranks, unwrap
from advlab.evaluate import accuracy
from advlab.models import ModelConfig
from advlab.params import Train

PROGRESS_EVERY = 25  # steps between progress-bar refreshes (each one reads the loss: a sync)


@dataclass
class EpochResult:
    epoch: int  # 1-based
    loss: float  # mean training loss over the epoch
    val_acc: float
    step_losses: torch.Tensor  # per-iteration training loss, on the CPU
    seconds: float = 0.0  # wall time of the epoch, validation included (a metric, never compared)


def model_config(arch: str, train_set: ImageSet) -> ModelConfig:
    """A model sized for the data, normalizing by the training split's per-channel statistics."""
    pixels = train_set.images.transpose(0, 1).reshape(train_set.shape[0], -1).double() / 255
    channels, height, width = train_set.shape
    if height != width:
        raise ValueError(f"images must be square, got {height}x{width}")
    return ModelConfig(arch=arch, in_channels=channels, image_size=height,
                       num_classes=len(train_set.classes),
                       mean=tuple(round(v, 6) for v in pixels.mean(1).tolist()),
                       std=tuple(round(v, 6) for v in pixels.std(1).tolist()))


def make_optimizer(model: nn.Module, cfg: Train) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def augment(x: torch.Tensor) -> torch.Tensor:
    """Random crop after 4-pixel zero padding, and random horizontal flip, per image."""
    n, _, h, w = x.shape
    padded = F.pad(x, (4, 4, 4, 4))
    dy, dx = torch.randint(0, 9, (2, n, 1), device=x.device).unbind(0)
    rows = (dy + torch.arange(h, device=x.device))[:, :, None]
    cols = (dx + torch.arange(w, device=x.device))[:, None, :]
    cropped = padded[torch.arange(n, device=x.device)[:, None, None], :, rows, cols]
    cropped = cropped.permute(0, 3, 1, 2)
    flip = torch.rand(n, 1, 1, 1, device=x.device) < 0.5
    return torch.where(flip, cropped.flip(3), cropped)


def epoch_seed(seed: int, epoch: int) -> int:
    """Every epoch draws from its own seed, so a run resumed at an epoch boundary is identical."""
    return seed * 1_000_003 + epoch


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, data: ImageSet,
                cfg: Train, seed: int, bar: tqdm, ranks: Ranks = SINGLE) -> torch.Tensor:
    """One pass over `data` (on the model's device); returns this rank's per-step losses.

    With several ranks each takes its slice of every global batch of cfg.batch_size images,
    and its loss is weighted by its share of the batch, so DDP's gradient average is the
    gradient of the whole batch's mean loss. A last batch smaller than the world is dropped.
    """
    device = data.images.device
    torch.manual_seed(seed)  # dropout and augmentation
    order = torch.Generator().manual_seed(seed)
    model.train()
    losses = []
    for step, index in enumerate(batches(len(data), cfg.batch_size, order, device=device), 1):
        if len(index) < ranks.world:  # every rank stops here together: a rank alone would hang
            break
        local = index[ranks.rank :: ranks.world] if ranks.world > 1 else index
        x = to_float(data.images[local])
        if cfg.augment:
            x = augment(x)
        x = adversarial_batch(unwrap(model), x, data.labels[local], cfg)  # x for `none`
        with autocast(device):
            loss = F.cross_entropy(model(x), data.labels[local])
        weighted = loss * (len(local) * ranks.world / len(index)) if ranks.world > 1 else loss
        optimizer.zero_grad(set_to_none=True)
        weighted.backward()
        optimizer.step()
        losses.append(loss.detach())
        if step % PROGRESS_EVERY == 0:
            bar.set_postfix(loss=f"{torch.stack(losses[-PROGRESS_EVERY:]).mean().item():.4f}")
            bar.update(PROGRESS_EVERY)
    bar.update(bar.total - bar.n)
    return torch.stack(losses).float()


def fit(model: nn.Module, optimizer: torch.optim.Optimizer, train_set: ImageSet,
        val_set: ImageSet, cfg: Train, seed: int, eval_batch_size: int, start_epoch: int = 1,
        on_epoch: Callable[[EpochResult], None] | None = None,
        ranks: Ranks = SINGLE) -> list[EpochResult]:
    """Trains epochs start_epoch..cfg.epochs; calls on_epoch after each (to log, checkpoint).

    Under DDP every rank runs this; the step losses are averaged across ranks at epoch end.
    """
    results = []
    steps = -(-len(train_set) // cfg.batch_size)
    for epoch in range(start_epoch, cfg.epochs + 1):
        start = time.perf_counter()
        with tqdm(total=steps, desc=f"epoch {epoch}/{cfg.epochs}", unit="step",
                  dynamic_ncols=True, disable=not ranks.is_main) as bar:
            losses = train_epoch(model, optimizer, train_set, cfg, epoch_seed(seed, epoch), bar,
                                 ranks)
            losses = mean_across_ranks(losses, ranks)
            val_acc = accuracy(unwrap(model), val_set, eval_batch_size)
            result = EpochResult(epoch, losses.mean().item(), val_acc.item(), losses.cpu(),
                                 time.perf_counter() - start)  # .item() waited for the GPU
            bar.set_postfix(loss=f"{result.loss:.4f}", val_acc=f"{result.val_acc:.4f}")
        results.append(result)
        if on_epoch is not None:
            on_epoch(result)
    return results
