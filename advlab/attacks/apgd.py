"""APGD-CE and APGD-T (Croce and Hein, ICML 2020), L-infinity: the gradient attacks of AutoAttack.

APGD is PGD without a step size to tune: it starts at 2 * eps, with momentum 0.75, and at
checkpoints w_j (p_0 = 0, p_1 = 0.22, p_j+1 = p_j + max(p_j - p_j-1 - 0.03, 0.06) of the
iterations) it halves an image's step and restarts it from its best point so far if, since
the last checkpoint, its loss rose in fewer than 75% of the steps, or the step was not halved
at the last checkpoint and the best loss has not improved. APGD-CE ascends the cross-entropy;
APGD-T the targeted DLR loss -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2) towards each of the
`targets` classes with the highest clean logits after the true one, in turn, on the images the
previous targets did not fool. The random start is x + eps * u / max|u| with u uniform (per
image, a new draw for every restart and target: core.Draws' stream of that number).

As in the reference implementation, an image counts as fooled at the first iterate the judge
(core.judge) misclassifies, and that iterate is kept, before any checkpoint moves it back to
its best point; here it also stops being attacked from then on.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from advlab.attacks.core import Draws, Judged, Loss, attack_gradient, cross_entropy, judge, project
from advlab.params.attack import Apgd, ApgdT

MOMENTUM = 0.75  # weight of the new step; 1 - MOMENTUM on the previous move
RHO = 0.75  # a step is halved if the loss rose in fewer than RHO of the steps since the check


def checkpoints(steps: int) -> list[int]:
    """The iterations (1-based) after which the step size is checked, as the reference code
    rounds them: the first after max(0.22 N, 1) iterations, the gap shrinking by 0.03 N per
    check down to 0.06 N."""
    gap, shrink, smallest = (max(int(f * steps), 1) for f in (0.22, 0.03, 0.06))
    marks, at = [], gap
    while at <= steps:
        marks.append(at)
        gap = max(gap - shrink, smallest)
        at += gap
    return marks


def dlr_targeted(target: torch.Tensor) -> Loss:
    """The targeted DLR loss towards target (per image): scale-invariant, needs >= 4 classes."""
    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        top = logits.sort(1).values
        rows = torch.arange(len(y), device=y.device)
        margin = logits[rows, y] - logits[rows, target]
        return -margin / (top[:, -1] - (top[:, -3] + top[:, -4]) / 2 + 1e-12)
    return loss


LossFor = Callable[[torch.Tensor], Loss]  # the loss of the images x[index], given index


def apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
         loss_for: LossFor, start: torch.Tensor) -> Judged:
    """APGD on correctly classified images x: per image, the first iterate that fools the model,
    else its point of highest loss, with the judge's logits of it. loss_for(index) is the
    per-image loss of x[index] (APGD-T's target differs per image). start: uniform noise in
    [-1, 1], x's shape."""
    noise = start / start.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
    x0 = project(x + eps * noise, x, eps)  # noise: max |noise| = 1 per image
    state, out = _State.start(model, x, y, x0, loss_for, eps)
    marks = set(checkpoints(steps))
    state.fooled_to(out)
    for it in range(1, steps + 1):
        if state.empty:
            return out
        state.step(model, x, y, eps, momentum=1.0 if it == 1 else MOMENTUM)
        state.fooled_to(out)  # before check(): a fooling iterate is kept, never reset
        if it in marks:
            state.check()
    out.x[state.index], out.logits[state.index] = state.best_x, state.best_logits
    return out


class _State:
    """Per active image: iterate, previous iterate, gradient, step size (size), best point and loss,
    and the counters of the checkpoint rule; fooled images are written out and dropped."""

    def __init__(self, **tensors: torch.Tensor) -> None:
        self.__dict__.update(tensors)

    @classmethod
    def start(cls, model: nn.Module, x: torch.Tensor, y: torch.Tensor, x0: torch.Tensor,
              loss_for: LossFor, eps: float) -> tuple[_State, Judged]:
        """The state at x0, and the output (x0 and its logits) that fooled images go to."""
        index = torch.arange(len(x), device=x.device)
        logits, values, grad = attack_gradient(model, x0, y, loss_for(index))
        size = torch.full((len(x),), 2.0 * eps, device=x.device)
        state = cls(loss_for=loss_for, index=index, x=x0, prev=x0.clone(), grad=grad, size=size,
                    value=values, logits=logits, best_x=x0.clone(), best_grad=grad.clone(),
                    best_logits=logits.clone(), best=values.clone(),
                    best_at_check=values.clone(), rises=torch.zeros_like(values), steps_since=0,
                    halved_at_check=torch.ones_like(values, dtype=torch.bool),
                    fooled=logits.argmax(1) != y)
        return state, Judged(x0.clone(), logits.clone())

    @property
    def empty(self) -> bool:
        return len(self.index) == 0

    def fooled_to(self, out: Judged) -> None:
        """Writes the fooling iterates (and their logits) to out and drops those images from
        every state tensor."""
        if not self.fooled.any():
            return
        out.x[self.index[self.fooled]] = self.x[self.fooled]
        out.logits[self.index[self.fooled]] = self.logits[self.fooled]
        keep = ~self.fooled
        for name, value in list(vars(self).items()):
            if isinstance(value, torch.Tensor) and name != "fooled":
                setattr(self, name, value[keep])
        self.fooled = self.fooled[keep]

    def step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
             momentum: float) -> None:
        xs, ys, size = x[self.index], y[self.index], self.size.view(-1, 1, 1, 1)
        z = project(self.x + size * self.grad.sign(), xs, eps)
        moved = project(self.x + momentum * (z - self.x) + (1 - momentum) * (self.x - self.prev),
                        xs, eps)
        self.prev, self.x = self.x, moved
        self.logits, values, self.grad = attack_gradient(model, moved, ys,
                                                         self.loss_for(self.index))
        self.rises += (values > self.value).float()
        self.steps_since += 1
        self.value = values
        better = values > self.best
        self.best_x[better], self.best_grad[better] = moved[better], self.grad[better]
        self.best_logits[better] = self.logits[better]
        self.best = torch.where(better, values, self.best)
        self.fooled = self.logits.argmax(1) != ys

    def check(self) -> None:
        """The checkpoint rule: halve the step and restart from the best point where it fires."""
        oscillating = self.rises < RHO * self.steps_since
        stalled = ~self.halved_at_check & (self.best <= self.best_at_check)
        halve = oscillating | stalled
        self.size = torch.where(halve, self.size / 2, self.size)
        self.x[halve], self.grad[halve] = self.best_x[halve], self.best_grad[halve]
        self.halved_at_check, self.best_at_check = halve, self.best.clone()
        self.rises = torch.zeros_like(self.rises)
        self.steps_since = 0


def apgd_ce(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, settings: Apgd,
            draws: Draws) -> Judged:
    """APGD on the cross-entropy loss, settings.restarts times on the images still standing,
    restart r from draws' stream r."""
    def restart(r: int, standing: torch.Tensor) -> Judged:
        return apgd(model, x[standing], y[standing], eps, settings.steps,
                    lambda index: cross_entropy, draws[standing].noise(r))
    return until_fooled(y, settings.restarts, restart)


def apgd_t(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, settings: ApgdT,
           draws: Draws) -> Judged:
    """APGD on the targeted DLR loss, towards each of the top settings.targets other classes
    (by the judge's clean logits) in turn, each run on the images the earlier targets did not
    fool, target k from draws' stream k - 1."""
    ranked = judge(model, x).argsort(1, descending=True)  # ranked[:, 0] is y: x is correct

    def towards(k: int, standing: torch.Tensor) -> Judged:
        target = ranked[standing, k + 1]
        return apgd(model, x[standing], y[standing], eps, settings.steps,
                    lambda index: dlr_targeted(target[index]), draws[standing].noise(k))
    return until_fooled(y, min(settings.targets, ranked.shape[1] - 1), towards)


def until_fooled(y: torch.Tensor, runs: int, run: Callable[[int, torch.Tensor], Judged]
                 ) -> Judged:
    """run(k, standing) for k = 0, 1, ..., runs - 1, each on the images (indices `standing`)
    that the earlier runs left classified correctly, by the logits each run returned."""
    standing = torch.arange(len(y), device=y.device)
    out = run(0, standing)
    standing = standing[out.logits.argmax(1) == y]
    for k in range(1, runs):
        if len(standing) == 0:
            break
        found = run(k, standing)
        out.x[standing], out.logits[standing] = found
        standing = standing[found.logits.argmax(1) == y[standing]]
    return out
