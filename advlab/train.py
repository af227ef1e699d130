"""Training: Adam on cross-entropy of logits, data as tensors on the device, batched by indexing."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from advlab.attacks.core import uniform_start
from advlab.attacks.pgd import adversarial_batch
from advlab.data import ImageSet, batches, to_float
from advlab.device import autocast, gradient_scaler
from advlab.distributed import SINGLE, Ranks, mean_across_ranks, unwrap
from advlab.evaluate import accuracy
from advlab.params import Train

PROGRESS_EVERY = 25  # steps between progress-bar refreshes (each one reads the loss: a sync)


@dataclass
class EpochResult:
    epoch: int  # 1-based
    loss: float  # mean training loss over the epoch
    val_acc: float
    step_losses: torch.Tensor  # per-iteration training loss, on the CPU
    seconds: float = 0.0  # wall time of the epoch, validation included (a metric, never compared)


def make_optimizer(model: nn.Module, cfg: Train) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


@dataclass(frozen=True)
class BatchNoise:
    """The random numbers of one batch: crop offsets, flips and the adversarial random start.

    Under DDP every rank draws the noise of the whole global batch from the same generator and
    keeps its own slice (`local`), so each image gets the noise a single process would give it.
    """

    shifts: torch.Tensor | None  # (n, 2) int64 crop offsets in [0, 8]: rows, columns
    flips: torch.Tensor | None  # (n,) bool
    start: torch.Tensor | None  # (n, C, H, W) uniform in [-1, 1]: x + eps * start

    def local(self, ranks: Ranks) -> BatchNoise:
        if ranks.world == 1:
            return self
        return BatchNoise(*(None if t is None else t[ranks.rank :: ranks.world]
                            for t in (self.shifts, self.flips, self.start)))


def draw_noise(n: int, shape: tuple[int, ...], cfg: Train,
               generator: torch.Generator) -> BatchNoise:
    """Noise for n images of `shape` (C, H, W) on the generator's device; only what cfg uses."""
    device = generator.device
    shifts = flips = start = None
    if cfg.augment:
        shifts = torch.randint(0, 9, (n, 2), generator=generator, device=device)
        flips = torch.rand(n, generator=generator, device=device) < 0.5
    if cfg.adversarial != "none":
        start = uniform_start(torch.empty(n, *shape, device=device), generator)
    return BatchNoise(shifts, flips, start)


def augment(x: torch.Tensor, shifts: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Crop after 4-pixel zero padding at `shifts`, then a horizontal flip where `flips`."""
    n, _, h, w = x.shape
    padded = F.pad(x, (4, 4, 4, 4))
    dy, dx = shifts.T[:, :, None]
    rows = (dy + torch.arange(h, device=x.device))[:, :, None]
    cols = (dx + torch.arange(w, device=x.device))[:, None, :]
    cropped = padded[torch.arange(n, device=x.device)[:, None, None], :, rows, cols]
    cropped = cropped.permute(0, 3, 1, 2)
    return torch.where(flips[:, None, None, None], cropped.flip(3), cropped)


def epoch_seed(seed: int, epoch: int) -> int:
    """Every epoch draws from its own seed, so a run resumed at an epoch boundary is identical."""
    return seed * 1_000_003 + epoch


def derived_seed(seed: int, stream: str) -> int:
    """A seed for one named random stream of an epoch, independent of the epoch seed's."""
    digest = hashlib.blake2b(f"{seed}/{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # torch.manual_seed takes < 2**63 safely


def dropout_seed(seed: int, ranks: Ranks) -> int:
    """Dropout draws inside the model, so it cannot be sliced like BatchNoise: each rank has its
    own stream. Rank 0 keeps the epoch seed, so one process draws what it always drew."""
    return seed if ranks.rank == 0 else derived_seed(seed, f"dropout rank {ranks.rank}")


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, data: ImageSet,
                cfg: Train, seed: int, bar: tqdm, ranks: Ranks = SINGLE,
                scaler: torch.amp.GradScaler | None = None) -> torch.Tensor:
    """One pass over `data` (on the model's device); returns this rank's per-step losses.

    With several ranks each takes its slice of every global batch of cfg.batch_size images,
    and its loss is weighted by its share of the batch, so DDP's gradient average is the
    gradient of the whole batch's mean loss. A last batch smaller than the world is dropped.
    `scaler` scales fp16 losses (fit keeps one across epochs; None: one for this epoch).
    """
    device = data.images.device
    if scaler is None:
        scaler = gradient_scaler(unwrap(model), device)
    torch.manual_seed(dropout_seed(seed, ranks))
    order = torch.Generator().manual_seed(seed)
    noise = torch.Generator(device=device).manual_seed(derived_seed(seed, "batch noise"))
    model.train()
    losses = []
    for step, index in enumerate(batches(len(data), cfg.batch_size, order, device=device), 1):
        if len(index) < ranks.world:  # every rank stops here together: a rank alone would hang
            break
        local = index[ranks.rank :: ranks.world] if ranks.world > 1 else index
        x = to_float(data.images[local])
        drawn = draw_noise(len(index), data.shape, cfg, noise).local(ranks)
        if cfg.augment:
            x = augment(x, drawn.shifts, drawn.flips)
        x = adversarial_batch(unwrap(model), x, data.labels[local], cfg, drawn.start)
        with autocast(unwrap(model), device):
            loss = F.cross_entropy(model(x), data.labels[local])
        weighted = loss * (len(local) * ranks.world / len(index)) if ranks.world > 1 else loss
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(weighted).backward()
        scaler.step(optimizer)
        scaler.update()
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
    scaler = gradient_scaler(unwrap(model), train_set.images.device)
    for epoch in range(start_epoch, cfg.epochs + 1):
        start = time.perf_counter()
        with tqdm(total=steps, desc=f"epoch {epoch}/{cfg.epochs}", unit="step",
                  dynamic_ncols=True, disable=not ranks.is_main) as bar:
            losses = train_epoch(model, optimizer, train_set, cfg, epoch_seed(seed, epoch), bar,
                                 ranks, scaler)
            losses = mean_across_ranks(losses, ranks)
            val_acc = accuracy(unwrap(model), val_set, eval_batch_size)
            result = EpochResult(epoch, losses.mean().item(), val_acc.item(), losses.cpu(),
                                 time.perf_counter() - start)  # .item() waited for the GPU
            bar.set_postfix(loss=f"{result.loss:.4f}", val_acc=f"{result.val_acc:.4f}")
        results.append(result)
        if on_epoch is not None:
            on_epoch(result)
    return results
