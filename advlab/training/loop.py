"""Training: a recipe's optimizer, schedule and loss (advlab.training.optim, attacks/training.py) on
data as tensors on the device, batched by indexing; validated, and optionally robust-validated
(PGD-k on a fixed subset), after every epoch; train.keep chooses which epoch's weights to keep.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from advlab.attacks.core import Draws, uniform_start
from advlab.attacks.training import adversarial_batch, robust_accuracy, robust_draws, training_loss
from advlab.core.device import autocast
from advlab.data.images import ImageSet, batches, stratified_order, to_float
from advlab.evaluation.classification import accuracy
from advlab.params.train import Train
from advlab.training.distributed import SINGLE, Ranks, mean_across_ranks, share_buffers, unwrap
from advlab.training.optim import TrainState, cpu_weights

PROGRESS_EVERY = 25  # steps between progress-bar refreshes (each one reads the loss: a sync)
OVERFITTING_DROP = 0.2  # Wong et al. 2020: catastrophic overfitting, robust accuracy falling
# by more than 20 points from its best

@dataclass
class EpochResult:
    epoch: int  # 1-based
    loss: float  # mean training loss over the epoch
    val_acc: float | None  # None without validation (data.val_size 0)
    step_losses: torch.Tensor  # per-iteration training loss, on the CPU
    seconds: float = 0.0  # wall time of the epoch, validation included (a metric, never compared)
    robust_val_acc: float | None = None  # PGD-k accuracy on the robust validation subset




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


def steps_per_epoch(images: int, cfg: Train, ranks: Ranks = SINGLE) -> int:
    """Optimizer steps of an epoch: every batch, but a last batch smaller than the world."""
    return images // cfg.batch_size + (images % cfg.batch_size >= ranks.world)


@dataclass
class FitJob:
    """One training run: what fit needs, and the state it changes.

    `model` may be DDP-wrapped (every rank runs fit on its own job); `seed` is base.seed;
    `on_epoch` is called after every epoch, restored ones too (to log, write metrics). The
    state (optimizer, schedule, scaler, EMA, kept weights), the robust validation subset with
    its fixed random starts and the history of finished epochs are built from these."""

    model: nn.Module
    train_set: ImageSet
    val_set: ImageSet
    cfg: Train
    seed: int
    eval_batch_size: int
    ranks: Ranks = SINGLE
    on_epoch: Callable[[EpochResult], None] | None = None
    state: TrainState = field(init=False)
    robust_set: ImageSet | None = field(init=False)
    robust_draws: Draws | None = field(init=False)
    history: list[EpochResult] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        steps = steps_per_epoch(len(self.train_set), self.cfg, self.ranks)
        self.state = TrainState.create(self.model, self.cfg, steps)
        self.robust_set = self.robust_draws = None
        if self.cfg.robust_val_images:
            self.robust_set = robust_subset(self.val_set, self.cfg.robust_val_images, self.seed)
            self.robust_draws = robust_draws(self.robust_set, self.seed, self.cfg)

    def evaluated(self) -> nn.Module:
        """The model validated and saved: the EMA's average with train.ema, else the model."""
        return unwrap(self.model) if self.state.ema is None else self.state.ema.model

    def kept_model(self) -> nn.Module:
        """evaluated(), holding the weights train.keep chose (the last epoch's for `last`)."""
        model = self.evaluated()
        if self.state.kept is not None:
            model.load_state_dict(self.state.kept["weights"])
        return model


def robust_subset(val_set: ImageSet, images: int, seed: int) -> ImageSet:
    """A fixed, stratified, seeded subset of `images` validation images (all, if fewer)."""
    order = stratified_order(val_set.labels.cpu(), torch.Generator().manual_seed(seed))
    return val_set.subset(order[:images].sort().values.to(val_set.labels.device))


def train_epoch(job: FitJob, seed: int, bar: tqdm) -> torch.Tensor:
    """One pass over job.train_set (on the model's device) drawing from `seed`; returns this
    rank's per-step losses.

    With several ranks each takes its slice of every global batch of cfg.batch_size images,
    and its loss is weighted by its share of the batch, so DDP's gradient average is the
    gradient of the whole batch's mean loss. A last batch smaller than the world is dropped.
    """
    model, data, cfg, ranks = job.model, job.train_set, job.cfg, job.ranks
    device = data.images.device
    torch.manual_seed(dropout_seed(seed, ranks))
    order = torch.Generator().manual_seed(seed)
    noise = torch.Generator(device=device).manual_seed(derived_seed(seed, "batch noise"))
    model.train()
    losses = []
    for step, index in enumerate(batches(len(data), cfg.batch_size, order, device=device), 1):
        if len(index) < ranks.world:  # every rank stops here together: a rank alone would hang
            break
        local = index[ranks.rank :: ranks.world] if ranks.world > 1 else index
        x, y = to_float(data.images[local]), data.labels[local]
        drawn = draw_noise(len(index), data.shape, cfg, noise).local(ranks)
        if cfg.augment:
            x = augment(x, drawn.shifts, drawn.flips)
        x_adv = adversarial_batch(unwrap(model), x, y, cfg, drawn.start)
        with autocast(unwrap(model), device):
            loss = training_loss(model, x, x_adv, y, cfg)
        job.state.step(loss * (len(local) * ranks.world / len(index)) if ranks.world > 1
                       else loss)
        losses.append(loss.detach())
        if step % PROGRESS_EVERY == 0:
            bar.set_postfix(loss=f"{torch.stack(losses[-PROGRESS_EVERY:]).mean().item():.4f}")
            bar.update(PROGRESS_EVERY)
    bar.update(bar.total - bar.n)
    return torch.stack(losses).float()


def validate(job: FitJob, epoch: int, losses: torch.Tensor, start: float) -> EpochResult:
    """The epoch's result: its losses, the evaluated model's validation (and robust
    validation) accuracy and its wall time, validation included."""
    model = job.evaluated()
    val_acc = accuracy(model, job.val_set, job.eval_batch_size).item() if len(job.val_set) else None
    robust = None
    if job.robust_set is not None:
        robust = robust_accuracy(model, job.robust_set, job.robust_draws, job.cfg,
                                 job.eval_batch_size).item()
    return EpochResult(epoch, losses.mean().item(), val_acc, losses.cpu(),
                       time.perf_counter() - start, robust)  # .item() waited for the GPU


def keep_score(result: EpochResult, keep: str) -> float:
    return result.val_acc if keep == "best_val" else result.robust_val_acc  # type: ignore[return-value]


def best_epoch(history: list[EpochResult], keep: str) -> int:
    """The epoch train.keep chooses: the last, or the first with the best (robust) val_acc."""
    if keep == "last":
        return history[-1].epoch
    return max(history, key=lambda r: (keep_score(r, keep), -r.epoch)).epoch


def overfitting_line(history: list[EpochResult]) -> str | None:
    """The one line naming catastrophic overfitting (Wong et al. 2020) at the last epoch, if
    its robust validation accuracy is the first to fall more than 20 points below the best
    before it; None otherwise (and without robust validation)."""
    robust = [r.robust_val_acc for r in history]
    if len(robust) < 2 or robust[-1] is None:
        return None

    def fell(i: int) -> bool:
        return robust[i] < max(robust[: i + 1]) - OVERFITTING_DROP

    if not fell(len(robust) - 1) or any(fell(i) for i in range(len(robust) - 1)):
        return None
    best = max(range(len(robust)), key=lambda i: (robust[i], -i))
    return (f"train: catastrophic overfitting at epoch {history[-1].epoch}: robust validation "
            f"accuracy fell from {robust[best]:.4f} (epoch {history[best].epoch}) to "
            f"{robust[-1]:.4f}, more than {OVERFITTING_DROP * 100:.0f} points")


def fit(job: FitJob, save: Callable[[EpochResult], None] | None = None) -> list[EpochResult]:
    """Trains epochs len(job.history) + 1 .. cfg.epochs. After each: the kept weights are
    updated (train.keep), `save` (the checkpoint) sees the result, then it joins job.history
    and job.on_epoch sees it. Returns job.history.

    Under DDP every rank runs this; at epoch end the step losses are averaged across ranks
    and rank 0's buffers (BatchNorm statistics) copied to every rank.
    """
    cfg = job.cfg
    steps = -(-len(job.train_set) // cfg.batch_size)
    for epoch in range(len(job.history) + 1, cfg.epochs + 1):
        start = time.perf_counter()
        with tqdm(total=steps, desc=f"epoch {epoch}/{cfg.epochs}", unit="step",
                  dynamic_ncols=True, disable=not job.ranks.is_main) as bar:
            losses = mean_across_ranks(train_epoch(job, epoch_seed(job.seed, epoch), bar),
                                       job.ranks)
            share_buffers(job.model, job.ranks)  # as a run resumed from the checkpoint has them
            result = validate(job, epoch, losses, start)
            bar.set_postfix(loss=f"{result.loss:.4f}", **({} if result.val_acc is None else
                                                          {"val_acc": f"{result.val_acc:.4f}"}))
        if cfg.keep != "last" and best_epoch([*job.history, result], cfg.keep) == epoch:
            job.state.kept = {"epoch": epoch, "weights": cpu_weights(job.evaluated())}
        if save is not None:
            save(result)
        job.history.append(result)
        if job.on_epoch is not None:
            job.on_epoch(result)
    return job.history
