"""FAB-T (Croce and Hein, ICML 2020, "Minimally distorted adversarial examples with a fast
adaptive boundary attack"), L-infinity, targeted: AutoAttack's third attack.

Towards a target class t, each step linearizes the boundary z_t = z_y at the iterate x_k and
computes the smallest L-infinity moves that reach it inside [0, 1]: d_k from x_k, d_0 from the
clean image x. It then steps to (x_k + eta d_k)(1 - a) + (x + eta d_0) a with the bias
a = min(|d_k| / (|d_k| + |d_0|), alpha_max) towards the clean image, clamped to [0, 1]; an
iterate past the boundary is pulled back to x + beta (x_k - x). AutoAttack's standard version
starts at the clean image (one run, no random start) and tries the `targets` classes with the
highest clean logits after the true one; an image counts as fooled if some iterate within eps of
x fools the model. Here every target of an image runs at once, batched with the other images,
and an image stops at the first iterate within eps that fools the model (the reference goes on
to shrink the perturbation, which cannot change that verdict). A point that does not fool the
model is returned as the clean image, as the reference does. FAB draws nothing at random.
Every decision (target ranking, fooled) and the logits returned are the judge's (core.judge).
"""

from __future__ import annotations

import torch
from torch import nn

from advlab.attacks.core import (
    Draws,
    Judged,
    attack_gradient,
    gradient_pass_is_the_judge,
    judge,
    loss_gradient,
)
from advlab.params.attack import FabT

FEW_ROWS = 1024  # (image, target) rows cheap to batch on any device
FORWARD_COST = 1 / 3  # a forward pass's cost in forward + backward passes (lab_cnn, CPU: ~0.35)
NEWTON_STEPS = 50  # at most; each lands on the plane's segment or beyond a kink (see below)


def linf_to_hyperplane(t: torch.Tensor, w: torch.Tensor, excess: torch.Tensor) -> torch.Tensor:
    """Per row of t (n, d) in [0, 1]: the move d of least L-infinity norm with <w, t + d> =
    <w, t> - excess and t + d in [0, 1]; where no move in the box reaches the plane, the one
    that gets closest (every coordinate to its bound).

    With radius r, coordinate i moves by min(r, room_i) towards the bound that changes
    <w, t> the right way, so the change g(r) = sum_i |w_i| min(r, room_i) is piecewise linear,
    increasing and concave. Newton's method from r = 0 never passes the root of g(r) = |excess|
    on a concave function and is exact once on the root's segment: a few steps, no sort."""
    direction = torch.where(w * excess.sign().where(excess != 0, 1.0)[:, None] < 0, 1.0, -1.0)
    room = torch.where(direction > 0, 1 - t, t)
    weight = w.abs()
    need = excess.abs()
    reachable = (weight * room).sum(1) >= need
    radius = torch.zeros_like(need)
    active = reachable.nonzero().flatten()
    for _ in range(NEWTON_STEPS):
        if len(active) == 0:
            break
        every = len(active) == len(t)  # the common case: no copy of the rows
        rooms, weights = (room, weight) if every else (room[active], weight[active])
        r = radius[active, None]
        gap = need[active] - torch.minimum(rooms, r).mul_(weights).sum(1)
        slope = torch.where(rooms > r, weights, 0.0).sum(1)
        radius[active] += (gap / slope.clamp_min(1e-30)).clamp_min(0)
        active = active[gap > 1e-6 * need[active]]
    radius = torch.where(reachable, radius, torch.inf)
    return direction * torch.minimum(room, radius[:, None]) * (w != 0)


def target_margin(target: torch.Tensor):
    """z_t - z_y per image: FAB-T's function, negative until the image reaches its target."""
    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(len(y), device=y.device)
        return logits[rows, target] - logits[rows, y]
    return loss


def fab_t(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, settings: FabT,
          draws: Draws) -> Judged:
    """FAB-T on correctly classified images x: per image the first iterate within eps that fools
    the model (towards any of its targets), else x itself. Images are attacked in chunks of
    about max(len(x), FEW_ROWS) (image, target) rows, so memory follows the batch size and a
    few survivors run in one chunk. `draws` is unused: FAB-T draws nothing."""
    out = Judged(x.clone(), judge(model, x))
    ranked = out.logits.argsort(1, descending=True)  # ranked[:, 0] is y: x is correct
    targets = ranked[:, 1:1 + settings.targets]
    per_chunk = max(1, max(len(x), FEW_ROWS) // targets.shape[1])
    for chunk in torch.arange(len(x), device=x.device).split(per_chunk):
        part = Judged(out.x[chunk], out.logits[chunk])
        out.x[chunk], out.logits[chunk] = _fab_chunk(model, part, y[chunk], targets[chunk], eps,
                                                     settings)
    return out


def _fab_chunk(model: nn.Module, out: Judged, y: torch.Tensor, targets: torch.Tensor,
               eps: float, settings: FabT) -> Judged:
    """FAB-T with rows (image i, its target k) for every image of out.x (clean, with the
    judge's logits) and column of targets; out is updated where a row fools within eps.

    Each step judges the new iterate, pulls back the rows past the boundary outside eps and
    takes the gradient at every row's point. Where the gradient's forward pass is the judge
    (fp32 off CUDA) a step may instead judge with the gradient pass at the iterate and redo
    the gradient only at the pulled-back rows: cheaper while few rows are pulled back."""
    x, pull_back = out.x.clone(), settings.beta
    image = torch.arange(len(x), device=x.device).repeat_interleave(targets.shape[1])
    target, clean, label = targets.flatten(), x[image], y[image]
    iterate = clean.clone()
    _, margin, grad = loss_gradient(model, iterate, label, target_margin(target))
    can_fuse, pulled = gradient_pass_is_the_judge(model, x.device), 0.0
    for it in range(1, settings.steps + 1):
        iterate = _step(iterate, clean, margin, grad, settings)
        last = it == settings.steps
        fused = can_fuse and not last and pulled <= FORWARD_COST
        if fused:
            logits, margin, grad = attack_gradient(model, iterate, label, target_margin(target))
        else:
            logits = judge(model, iterate)
        fooled = logits.argmax(1) != label
        close = fooled & ((iterate - clean).flatten(1).abs().amax(1) <= eps)
        out, done = _keep_fooling(out, image, Judged(iterate, logits), close)
        if last:
            break
        back = fooled & ~close & ~done[image]  # past the boundary but outside eps: pull back
        iterate[back] = clean[back] + pull_back * (iterate[back] - clean[back])
        if can_fuse:
            pulled = back.float().mean().item()
        keep = ~done[image]
        image, target, clean, label = image[keep], target[keep], clean[keep], label[keep]
        iterate, margin, grad = iterate[keep], margin[keep], grad[keep]
        if len(iterate) == 0:
            break
        stale = (back[keep] if fused else keep[keep]).nonzero().flatten()
        if len(stale):  # the rows whose gradient is not yet at their point
            _, margin[stale], grad[stale] = loss_gradient(model, iterate[stale], label[stale],
                                                          target_margin(target[stale]))
    return out


def _keep_fooling(out: Judged, image: torch.Tensor, iterate: Judged,
                  close: torch.Tensor) -> tuple[Judged, torch.Tensor]:
    """Writes to out, per image with a fooling row within eps (`close`), its first such row
    and its logits; returns out and which images are done. Rows are ordered by image."""
    done = torch.zeros(len(out.x), dtype=torch.bool, device=out.x.device)
    rows = close.nonzero().flatten()
    if len(rows) == 0:
        return out, done
    owner = image[rows]
    rows = rows[torch.cat([owner.new_ones(1, dtype=torch.bool), owner[1:] != owner[:-1]])]
    out.x[image[rows]] = iterate.x[rows]
    out.logits[image[rows]] = iterate.logits[rows]
    done[image[rows]] = True
    return out, done


def _step(iterate: torch.Tensor, clean: torch.Tensor, margin: torch.Tensor, grad: torch.Tensor,
          settings: FabT) -> torch.Tensor:
    """One FAB step towards the linearized boundary margin + <grad, z - iterate> = 0."""
    n = len(iterate)
    w = grad.flatten(1)
    offset = torch.cat([margin, margin + (w * (clean - iterate).flatten(1)).sum(1)])
    moves = linf_to_hyperplane(torch.cat([iterate.flatten(1), clean.flatten(1)]),
                               torch.cat([w, w]), offset)
    size = moves.abs().amax(1).clamp_min(1e-8)
    alpha = (size[:n] / (size[:n] + size[n:])).clamp(0, settings.alpha_max).view(-1, 1, 1, 1)
    from_iterate, from_clean = moves[:n].view_as(iterate), moves[n:].view_as(iterate)
    return ((iterate + settings.eta * from_iterate) * (1 - alpha)
            + (clean + settings.eta * from_clean) * alpha).clamp(0, 1)
