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
from advlab.params.attack import Square

SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)  # p halves after these proposals


def square_fraction(p_init: float, proposal: int, queries: int, rescale: bool = False) -> float:
    """The fraction of the image the square covers at proposal number `proposal` (from 0);
    rescale: the schedule's counts as fractions of 10,000 queries, scaled to `queries`."""
    scaled = int(proposal / queries * 10_000) if rescale else proposal
    return p_init / 2 ** sum(scaled > mark for mark in SCHEDULE)


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z_y - max_{j != y} z_j per image: negative once the image is misclassified."""
    true = logits.gather(1, y[:, None])
    return true[:, 0] - logits.scatter(1, y[:, None], -math.inf).amax(1)


@torch.no_grad()
def square(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, settings: Square,
           draws: Draws) -> Judged:
    """Square on correctly classified images x: per image the first query that fools the model,
    else the point of lowest margin found within settings.queries queries."""
    n, c, h, w = x.shape
    stripes = torch.where(draws.uniform(0, (c, 1, w)) >= 0.5, 1.0, -1.0)  # (n, c, 1, w)
    best = (x + eps * stripes).clamp(0, 1)
    out = Judged(best, judge(model, best))
    # per image and proposal: top, left, a sign per channel; drawn at once (one hash pass)
    every = draws.integers(1, 1 << 30, settings.queries * (2 + c)).view(n, -1, 2 + c)
    search = _Search.of(out, x, y, every)
    windows = _Windows(h, w, x.device)
    for query in range(1, settings.queries):
        if search.done:
            break
        fraction = square_fraction(settings.p_init, query - 1, settings.queries, settings.rescale)
        drawn = search.every[:, query]
        window = windows.at(_side(fraction, c, h, w), drawn[:, 0], drawn[:, 1])
        corner = ((drawn[:, 2:] & 1) * 2 - 1).to(x.dtype).view(-1, c, 1, 1)
        to_corner = (search.x + eps * corner).clamp(0, 1)
        moves = ((to_corner - search.best).abs() >= 1e-7) & window
        corner = torch.where(moves.flatten(1).any(1).view(-1, 1, 1, 1), corner, -corner)
        proposal = torch.where(window, (search.x + eps * corner).clamp(0, 1), search.best)
        search.offer(proposal, judge(model, proposal))
    search.write(out)
    return out


class _Search:
    """The images still standing, compacted (their index in the batch, clean image, label,
    draws, best point, its logits and margin): no gather or scatter per query. The fooled
    ones wait in `written` (index, point, logits) until write()."""

    def __init__(self, **tensors: torch.Tensor) -> None:
        self.__dict__.update(tensors)

    @classmethod
    def of(cls, out: Judged, x: torch.Tensor, y: torch.Tensor, every: torch.Tensor) -> _Search:
        index = torch.nonzero(out.logits.argmax(1) == y).flatten()
        search = cls(index=index, x=x[index], y=y[index], every=every[index], best=out.x[index],
                     logits=out.logits[index], margin=margin(out.logits[index], y[index]))
        search.written = []
        return search

    @property
    def done(self) -> bool:
        return len(self.index) == 0

    def offer(self, proposal: torch.Tensor, logits: torch.Tensor) -> None:
        """Keeps each image's proposal if it lowers the margin; an image the kept point fools
        (by the judge's argmax) is done."""
        new_margin = margin(logits, self.y)
        better = new_margin < self.margin
        self.best = torch.where(better.view(-1, 1, 1, 1), proposal, self.best)
        self.logits = torch.where(better[:, None], logits, self.logits)
        self.margin = torch.where(better, new_margin, self.margin)
        fooled = self.logits.argmax(1) != self.y
        if fooled.any():
            self._drop(fooled)

    def _drop(self, fooled: torch.Tensor) -> None:
        self.written.append((self.index[fooled], self.best[fooled], self.logits[fooled]))
        keep = ~fooled
        for name in ("index", "x", "y", "every", "best", "logits", "margin"):
            setattr(self, name, getattr(self, name)[keep])

    def write(self, out: Judged) -> None:
        """Every image's point and logits into out: the fooling ones, then the standing."""
        for index, best, logits in [*self.written, (self.index, self.best, self.logits)]:
            out.x[index], out.logits[index] = best, logits


class _Windows:
    """Per image a square window (n, 1, h, w) bool of a side at (top, left) drawn as integers:
    two lookups in tables of row and column bands, built once per side."""

    def __init__(self, h: int, w: int, device: torch.device) -> None:
        self.h, self.w, self.device, self.side = h, w, device, 0

    def at(self, side: int, top_draw: torch.Tensor, left_draw: torch.Tensor) -> torch.Tensor:
        if side != self.side:
            self.side = side
            self.rows, self.cols = self._bands(self.h), self._bands(self.w)
        rows = self.rows[top_draw % (self.h - side + 1)]
        cols = self.cols[left_draw % (self.w - side + 1)]
        return rows[:, None, :, None] & cols[:, None, None, :]

    def _bands(self, size: int) -> torch.Tensor:
        """(size - side + 1, size) bool: row k holds the band [k, k + side)."""
        at = torch.arange(size, device=self.device)
        start = torch.arange(size - self.side + 1, device=self.device)[:, None]
        return (at >= start) & (at < start + self.side)


def _side(fraction: float, c: int, h: int, w: int) -> int:
    """The square's side for an area of fraction * (pixels per channel), at least 1, below h."""
    side = max(int(round(math.sqrt(fraction * c * h * w / c))), 1)
    return min(side, h - 1, w - 1) if min(h, w) > 1 else 1
