"""FGSM (Goodfellow et al. 2015; the lab's Problem 5): x' = clamp(x + eps * sign(grad_x CE), 0, 1).

The gradient does not depend on eps: the sweep computes it once per batch and reuses it for
every eps, one forward pass each (its fast path, see robustness.py)."""

from __future__ import annotations

import torch
from torch import nn

from advlab.attacks.core import loss_gradient


def fgsm_gradient_sign(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """sign(grad_x CE(model(x), y)) for float images x in [0, 1], in fp32 with the model in eval."""
    return loss_gradient(model, x, y)[2].sign()


def perturb(x: torch.Tensor, grad_sign: torch.Tensor, eps: float) -> torch.Tensor:
    """The FGSM image, clamped to the valid pixel range; eps = 0 returns x itself."""
    return x if eps == 0 else (x + eps * grad_sign).clamp_(0, 1)
