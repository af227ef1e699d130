"""Square Attack (Andriushchenko et al., ECCV 2020), L-infinity: a random search that only
queries the model's outputs, so gradient masking cannot hide a weak model from it.

Start: vertical stripes, every column of every channel at x +- eps (random signs). Each query
proposes, per image, a square window of side s at a random position whose pixels move to
x +- eps (one random sign per channel) and keeps the proposal if it lowers the margin
z_y - max_{j != y} z_j. The square's area is a fraction p of the image, p_init halved at the
reference schedule's query counts (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of 10,000,
rescaled to the budget). `queries` counts every forward pass an image takes, the start's
included; an image stops at the first query that fools the model. It runs under no_grad:
no gradient is ever computed.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from advlab.attacks.core import Draws, eval_logits
from advlab.params import Square

SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)  # of 10,000 queries: p halves


def square_fraction(p_init: float, query: int, queries: int) -> float:
    """The fraction of the image the square covers at this query."""
    scaled = int(query / queries * 10_000)
    return p_init / 2 ** sum(scaled > mark for mark in SCHEDULE)


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z_y - max_{j != y} z_j per image: negative once the image is misclassified."""
    rows = torch.arange(len(y), device=y.device)
    true = logits[rows, y]
    others = logits.clone()
    others[rows, y] = -math.inf
    return true - others.amax(1)


@torch.no_grad()
def square(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, settings: Square,
           draws: Draws) -> torch.Tensor:
    """Square on correctly classified images x: per image the first query that fools the model,
    else the point of lowest margin found within settings.queries queries."""
    n, c, h, w = x.shape
    generator = draws.generator
    stripes = torch.where(draws.start[:, :, :1, :] >= 0, 1.0, -1.0)  # (n, c, 1, w) random signs
    best = (x + eps * stripes).clamp(0, 1)
    best_margin = margin(eval_logits(model, best), y)
    active = torch.nonzero(best_margin >= 0).flatten()
    rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    for query in range(1, settings.queries):
        if len(active) == 0:
            break
        side = _side(square_fraction(settings.p_init, query, settings.queries), c, h, w)
        top = _randint(h - side + 1, len(active), generator, x)
        left = _randint(w - side + 1, len(active), generator, x)
        window = (((rows >= top[:, None]) & (rows < (top + side)[:, None]))[:, None, :, None]
                  & ((cols >= left[:, None]) & (cols < (left + side)[:, None]))[:, None, None, :])
        xs, current = x[active], best[active]
        corner = _signs((len(active), c, 1, 1), generator, x)
        proposal = torch.where(window, (xs + eps * corner).clamp(0, 1), current)
        unchanged = ((proposal - current).abs() < 1e-7).flatten(1).all(1)  # same corner drawn:
        flipped = torch.where(window, (xs - eps * corner).clamp(0, 1), current)  # take the other
        proposal[unchanged] = flipped[unchanged]
        new_margin = margin(eval_logits(model, proposal), y[active])
        better = new_margin < best_margin[active]
        best[active[better]] = proposal[better]
        best_margin[active[better]] = new_margin[better]
        active = active[best_margin[active] >= 0]
    return best


def _side(fraction: float, c: int, h: int, w: int) -> int:
    """The square's side for an area of fraction * (pixels per channel), at least 1, below h."""
    side = max(int(round(math.sqrt(fraction * c * h * w / c))), 1)
    return min(side, h - 1, w - 1) if min(h, w) > 1 else 1


def _signs(shape: tuple[int, ...], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    bits = torch.randint(0, 2, shape, generator=generator, device=like.device)
    return (bits * 2 - 1).to(like.dtype)


def _randint(high: int, n: int, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.randint(0, high, (n,), generator=generator, device=like.device)
