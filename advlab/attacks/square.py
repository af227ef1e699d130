"""Square Attack (Andriushchenko et al., ECCV 2020), L-infinity: a random search that only
queries the model's outputs, so gradient masking cannot hide a weak model from it.

Start: vertical stripes, every column of every channel at x +- eps (random signs). Each query
proposes, per image, a square window of side s at a random position whose pixels move to
x +- eps (one random sign per channel) and keeps the proposal if it lowers the margin
z_y - max_{j != y} z_j of the judge's logits (core.judge). The square's area is a fraction p
of the image, p_init halved after proposal 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000,
as AutoAttack runs it (resc_schedule=False; `rescale: true` maps those counts of 10,000 onto
the budget, the paper's schedule for other budgets). `queries` counts every forward pass an
image takes, the start's included; an image stops at the first query that fools the model.
Every draw is the image's own (core.Draws: stream 0 the stripes, stream 1 the proposals').
It runs under no_grad: no gradient is ever computed.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from advlab.attacks.core import Draws, Judged, judge
from advlab.params import Square

SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)  # p halves after these proposals


def square_fraction(p_init: float, proposal: int, queries: int, rescale: bool = False) -> float:
    """The fraction of the image the square covers at proposal number `proposal` (from 0);
    rescale: the schedule's counts as fractions of 10,000 queries, scaled to `queries`."""
    scaled = int(proposal / queries * 10_000) if rescale else proposal
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
           draws: Draws) -> Judged:
    """Square on correctly classified images x: per image the first query that fools the model,
    else the point of lowest margin found within settings.queries queries."""
    n, c, h, w = x.shape
    stripes = torch.where(draws.uniform(0, (c, 1, w)) >= 0.5, 1.0, -1.0)  # (n, c, 1, w)
    best = (x + eps * stripes).clamp(0, 1)
    best_logits = judge(model, best)
    best_margin = margin(best_logits, y)
    active = torch.nonzero(best_logits.argmax(1) == y).flatten()
    rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    # per image and proposal: top, left, a sign per channel; drawn at once (one hash pass)
    every = draws.integers(1, 1 << 30, settings.queries * (2 + c)).view(n, -1, 2 + c)
    for query in range(1, settings.queries):
        if len(active) == 0:
            break
        fraction = square_fraction(settings.p_init, query - 1, settings.queries, settings.rescale)
        side = _side(fraction, c, h, w)
        drawn = every[active, query]
        top, left = drawn[:, 0] % (h - side + 1), drawn[:, 1] % (w - side + 1)
        corner = ((drawn[:, 2:] & 1) * 2 - 1).to(x.dtype).view(-1, c, 1, 1)
        window = (((rows >= top[:, None]) & (rows < (top + side)[:, None]))[:, None, :, None]
                  & ((cols >= left[:, None]) & (cols < (left + side)[:, None]))[:, None, None, :])
        xs, current = x[active], best[active]
        proposal = torch.where(window, (xs + eps * corner).clamp(0, 1), current)
        unchanged = ((proposal - current).abs() < 1e-7).flatten(1).all(1)  # same corner drawn:
        flipped = torch.where(window, (xs - eps * corner).clamp(0, 1), current)  # take the other
        proposal[unchanged] = flipped[unchanged]
        logits = judge(model, proposal)
        new_margin = margin(logits, y[active])
        better = new_margin < best_margin[active]
        best[active[better]] = proposal[better]
        best_logits[active[better]] = logits[better]
        best_margin[active[better]] = new_margin[better]
        active = active[best_logits[active].argmax(1) == y[active]]  # fooled: argmax, as judged
    return Judged(best, best_logits)


def _side(fraction: float, c: int, h: int, w: int) -> int:
    """The square's side for an area of fraction * (pixels per channel), at least 1, below h."""
    side = max(int(round(math.sqrt(fraction * c * h * w / c))), 1)
    return min(side, h - 1, w - 1) if min(h, w) > 1 else 1
