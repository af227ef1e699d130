"""PGD (Madry et al. 2018, L-infinity) and the adversarial examples of training.

One parameterization serves evaluation and training: `steps` FGSM-like steps of size
step_scale * eps / steps, each projected onto the eps-ball around x and clamped to [0, 1],
from a uniformly random start in the ball when random_start is set (params: attack.pgd). With
1 step, no random start and step_scale 1 it is FGSM exactly. Training uses the same function
with the settings of its papers (training_attack): fgsm_rs is 1 step of step_scale 1.25 (Wong,
Rice and Kolter 2020), pgd is train.adv_steps steps of step_scale 2.5 (Madry et al. 2018).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from advlab.attacks.core import (
    Draws,
    Judged,
    attack_gradient,
    judge,
    loss_gradient,
    project,
    uniform_start,
)
from advlab.params import Pgd

if TYPE_CHECKING:
    from advlab.params import Train

FGSM_RS_STEP_SCALE = 1.25  # Wong, Rice and Kolter 2020: step 1.25 * eps from a random start
MADRY_STEP_SCALE = 2.5  # Madry et al. 2018: steps * step size = 2.5 * eps


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
        step_size: float, start: torch.Tensor | None = None) -> torch.Tensor:
    """L-infinity PGD from x + eps * start (start None: from x itself), clamped to [0, 1].

    Every step: x' += step_size * sign(grad), then x' is projected onto [x - eps, x + eps] and
    clamped to [0, 1]. eps = 0 returns x itself. Returns the last iterate of every image."""
    if eps == 0:
        return x
    x_adv = x if start is None else (x + eps * start).clamp(0, 1)
    for _ in range(steps):
        x_adv = project(x_adv + step_size * loss_gradient(model, x_adv, y)[2].sign(), x, eps)
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


def training_attack(cfg: Train) -> Pgd:
    """The PGD settings of cfg.adversarial (fgsm_rs or pgd), as the papers set them."""
    if cfg.adversarial == "fgsm_rs":
        return Pgd(steps=1, step_scale=FGSM_RS_STEP_SCALE, random_start=True)
    return Pgd(steps=cfg.adv_steps, step_scale=MADRY_STEP_SCALE, random_start=True)


def adversarial_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                      cfg: Train, start: torch.Tensor | None = None) -> torch.Tensor:
    """The training batch for cfg.adversarial: x itself for `none`, else PGD with
    training_attack(cfg) at cfg.adv_eps (the last iterate: training wants the hardest point).

    The examples are made with the model in eval mode (as TRADES does), so the attack does
    not update BatchNorm's running statistics and the model is left in the mode it was in.
    `start` is the random start (uniform_start's noise); None draws it from the global
    generator. train_epoch passes its rank's slice of the global batch's noise."""
    if cfg.adversarial == "none":
        return x
    start = uniform_start(x) if start is None else start
    settings = training_attack(cfg)
    step_size = settings.step_scale * cfg.adv_eps / settings.steps
    return pgd(model, x, y, cfg.adv_eps, settings.steps, step_size, start).detach()
