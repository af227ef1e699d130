"""The optimizer side of a training recipe: Adam or SGD, a learning-rate schedule stepped per
iteration, an exponential moving average (EMA) of the weights and fp16 loss scaling, held in
one TrainState whose state_dict the checkpoint keeps, so that a resumed run is exact.

Weight decay (train.weight_decay) is on every parameter by default: torch's default, and what
Wong et al. 2020 and TRADES do. With train.decay_norm_and_bias: false it is on the weights of
convolutions and linear layers only, not on BatchNorm's scales and shifts nor on any bias
(every parameter of at most one dimension), as airbench and most ImageNet recipes do.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from advlab.core.device import gradient_scaler
from advlab.params.train import Train
from advlab.training.distributed import unwrap

ONECYCLE_RISE = 0.3  # onecycle without warmup_epochs rises over 30% of the run (torch's default)
CYCLIC_RISE = 0.4  # cyclic without warmup_epochs peaks at 2/5 of the run (Wong et al. 2020)
ONECYCLE_DIV = 25.0  # onecycle starts at lr / 25 and ends at lr / 25 / 1e4 (torch's OneCycleLR)
ONECYCLE_FINAL_DIV = 1e4
PIECEWISE = ((0.5, 0.1), (0.75, 0.01))  # from this fraction of the decay on, lr times factor


def parameter_groups(model: nn.Module, cfg: Train) -> list[dict]:
    """All parameters in one group; with decay_norm_and_bias off, BatchNorm parameters and
    biases (ndim <= 1) in a second group without weight decay."""
    params = list(model.parameters())
    if cfg.decay_norm_and_bias:
        return [{"params": params}]
    return [{"params": [p for p in params if p.ndim > 1]},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, cfg: Train) -> torch.optim.Optimizer:
    groups = parameter_groups(model, cfg)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def rise_steps(cfg: Train, total: int) -> float:
    """Optimizer steps of rising lr: train.warmup_epochs, else the schedule's own default.
    Unrounded: onecycle's peak is fractional as in torch's OneCycleLR (lr_factor rounds the
    others')."""
    if cfg.warmup_epochs > 0:
        return min(total, cfg.warmup_epochs * total / cfg.epochs)
    return {"onecycle": ONECYCLE_RISE, "cyclic": CYCLIC_RISE}.get(cfg.schedule, 0) * total


def _cosine(start: float, end: float, fraction: float) -> float:
    return end + (start - end) * (1 + math.cos(math.pi * fraction)) / 2


def _onecycle(step: int, total: int, rise: float) -> float:
    """torch.optim.lr_scheduler.OneCycleLR's factor (two phases, cosine annealing)."""
    peak = rise - 1  # the step at the full lr: pct_start * total_steps - 1, fractional in torch
    if step <= peak and peak > 0:
        return _cosine(1 / ONECYCLE_DIV, 1.0, step / peak)
    fraction = (step - max(peak, 0)) / max(1, total - 1 - max(peak, 0))
    return _cosine(1.0, 1 / ONECYCLE_DIV / ONECYCLE_FINAL_DIV, fraction)


def lr_factor(schedule: str, step: int, total: int, rise: float) -> float:
    """The multiplier of train.lr at optimizer step `step` (0-based) of `total`, `rise` of them
    rising.

    onecycle is torch's OneCycleLR: a cosine from lr/25 up to lr over the rise, then a cosine
    down to lr/25e4. cyclic is Wong et al.'s triangle: linear from 0 up to lr at the end of the
    rise, then linear down to 0 at the last step. The others rise linearly to lr (a warmup),
    then: constant stays; cosine falls by a cosine to 0 (torch's CosineAnnealingLR); piecewise
    is lr for the first half of the rest, lr/10 to 3/4, then lr/100 (Madry et al., Rice et al.).
    """
    step = min(step, total - 1)  # after the last step (the lr left in the optimizer): the last
    if schedule == "onecycle":
        return _onecycle(step, total, rise)
    rise = round(rise)
    if schedule == "cyclic":
        done = step + 1
        return done / rise if done <= rise else (total - done) / max(1, total - rise)
    if step < rise:
        return (step + 1) / rise
    fraction = (step - rise) / max(1, total - rise)
    if schedule == "cosine":
        return _cosine(1.0, 0.0, fraction)
    if schedule == "piecewise":
        return next((factor for start, factor in reversed(PIECEWISE) if fraction >= start), 1.0)
    return 1.0


class Ema:
    """An exponential moving average of a model's weights and BatchNorm statistics: after every
    optimizer step, average = decay * average + (1 - decay) * current (integer buffers, such as
    BatchNorm's step count, are copied). `model` is the averaged copy, always in eval mode."""

    def __init__(self, source: nn.Module, decay: float):
        self.source, self.decay = source, decay
        self.model = copy.deepcopy(source).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self) -> None:
        for average, current in zip(self.model.state_dict().values(),
                                    self.source.state_dict().values(), strict=True):
            if average.is_floating_point():
                average.lerp_(current, 1 - self.decay)
            else:
                average.copy_(current)


@dataclass
class TrainState:
    """What an optimizer step changes besides the weights, all of it checkpointed: optimizer,
    per-iteration lr schedule, fp16 gradient scaler, the EMA (None without train.ema) and the
    weights train.keep chose so far (`kept`: {"epoch", "weights"}, None until an epoch is)."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    ema: Ema | None
    kept: dict | None = None

    @classmethod
    def create(cls, model: nn.Module, cfg: Train, steps_per_epoch: int) -> TrainState:
        """For `model` (DDP-wrapped or not) trained cfg.epochs epochs of steps_per_epoch steps."""
        optimizer = make_optimizer(model, cfg)
        total = cfg.epochs * steps_per_epoch
        rise = rise_steps(cfg, total)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(cfg.schedule, step, total, rise))
        device = next(model.parameters()).device
        ema = None if cfg.ema is None else Ema(unwrap(model), cfg.ema)
        return cls(optimizer, scheduler, gradient_scaler(unwrap(model), device), ema)

    def step(self, loss: torch.Tensor) -> None:
        """Backward of `loss` (scaled for fp16), one optimizer and schedule step, the EMA."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update()

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "ema": None if self.ema is None else cpu_weights(self.ema.model),
                "kept": self.kept}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.model.load_state_dict(state["ema"])
        self.kept = state["kept"]


def cpu_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's state_dict on the CPU (what checkpoints and model files hold)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
