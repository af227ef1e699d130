"""What every attack shares: fp32 input gradients in eval mode, projection onto the eps-ball,
predictions in the evaluation's precision.

Pixels are in [0, 1] and the model normalizes them itself, so eps is in pixel units and every
adversarial image is clamped to [0, 1] as well as to the L-infinity ball around x.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from advlab.device import evaluating, no_tf32

# per-image loss of (logits, labels): the attack ascends it
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def loss_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  loss: Loss = cross_entropy) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits, per-image loss, grad_x of the summed loss) in fp32 with the model in eval mode.

    The loss is summed, not averaged, over the batch: each image's gradient is then exactly its
    own loss's gradient, not scaled by 1/batch (which could underflow small entries to 0).
    The model's mode is restored and its parameters' .grad are left untouched."""
    was_training = model.training
    model.eval()
    with torch.enable_grad(), no_tf32():
        x = x.detach().float().requires_grad_(True)
        logits = model(x).float()
        values = loss(logits, y)
        (grad,) = torch.autograd.grad(values.sum(), x)
    model.train(was_training)
    return logits.detach(), values.detach(), grad


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
    """x_adv clipped to the L-infinity ball of radius eps around x, then to [0, 1]."""
    return torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp_(0, 1)


def uniform_start(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Noise uniform in [-1, 1], x's shape: a random start is x + eps * noise.

    generator None draws from the global generator (training seeds it per epoch)."""
    return torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1


@dataclass(frozen=True)
class Draws:
    """An attack's randomness for images x: `start`, uniform noise in [-1, 1] of x's shape
    drawn per image independently of which other images are attacked (the sweep draws it for
    the whole set), and a generator for every further draw."""

    start: torch.Tensor
    generator: torch.Generator

    @classmethod
    def fresh(cls, x: torch.Tensor, generator: torch.Generator) -> Draws:
        return cls(uniform_start(x, generator), generator)


@torch.inference_mode()
def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits in the same precision context as evaluate.predict_logits."""
    with evaluating(model, x.device):
        return model(x).float()


@torch.no_grad()
def eval_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """fp32 logits with the model in eval mode (its mode is restored): what attacks query."""
    was_training = model.training
    model.eval()
    with no_tf32():
        logits = model(x).float()
    model.train(was_training)
    return logits
