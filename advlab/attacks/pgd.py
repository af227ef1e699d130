"""PGD (Madry et al. 2018, L-infinity), for evaluation and for training.

One parameterization serves both: `steps` FGSM-like steps of size step_scale * eps / steps,
each projected onto the eps-ball around x and clamped to [0, 1], from a uniformly random start
in the ball when random_start is set (params: attack.pgd). With 1 step, no random start and
step_scale 1 it is FGSM exactly. Training uses the same function with the settings of its
papers (attacks/training.py).
"""

from __future__ import annotations

import torch
from torch import nn

from advlab.attacks.core import (
    Draws,
    Judged,
    Loss,
    attack_gradient,
    cross_entropy,
    judge,
    loss_gradient,
    project,
)
from advlab.params.attack import Pgd


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
        step_size: float, start: torch.Tensor | None = None,
        loss: Loss = cross_entropy) -> torch.Tensor:
    """L-infinity PGD ascending `loss` (of logits and y) from x + eps * start (start None:
    from x itself), clamped to [0, 1].

    Every step: x' += step_size * sign(grad), then x' is projected onto [x - eps, x + eps] and
    clamped to [0, 1]. eps = 0 returns x itself. Returns the last iterate of every image."""
    if eps == 0:
        return x
    x_adv = x if start is None else (x + eps * start).clamp(0, 1)
    for _ in range(steps):
        x_adv = project(x_adv + step_size * loss_gradient(model, x_adv, y, loss)[2].sign(), x,
                        eps)
    return x_adv


def pgd_until_fooled(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                     settings: Pgd, draws: Draws) -> Judged:
    """PGD for evaluation: as pgd, but an image stops at the first iterate the judge
    (core.judge) finds fooling and keeps it, so the cost follows the images still standing
    (x: correctly classified). The check reuses the logits of the forward pass that computes
    the gradient where it is the judge's; the last iterate is judged once more."""
    x_adv = (x + eps * draws.start).clamp(0, 1) if settings.random_start else x.clone()
    active = torch.arange(len(x), device=x.device)
    step_size = settings.step_scale * eps / settings.steps
    logits = None
    for _ in range(settings.steps):
        judged, _, grad = attack_gradient(model, x_adv[active], y[active])
        if logits is None:
            logits = judged  # every image is active at the first step
        else:
            logits[active] = judged
        standing = judged.argmax(1) == y[active]
        active, grad = active[standing], grad[standing]
        if len(active) == 0:
            return Judged(x_adv, logits)
        x_adv[active] = project(x_adv[active] + step_size * grad.sign(), x[active], eps)
    logits[active] = judge(model, x_adv[active])
    return Judged(x_adv, logits)
