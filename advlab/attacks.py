"""Attacks: FGSM (the lab's Problem 5) and PGD, and the adversarial examples of training.

FGSM: x' = clamp(x + eps * sign(grad_x CE(model(x), y)), 0, 1). Pixels are in [0, 1] and the
model normalizes them itself, so eps is in pixel units and the clamp keeps x' a valid image.
The gradient does not depend on eps: it is computed once per batch (fp32, eval mode) and
reused for every eps, one forward pass each.

PGD (Madry et al. 2018, L-infinity): from a uniformly random start in the eps-ball, `steps`
FGSM-like steps of size alpha, each followed by projection onto the eps-ball around x and
clamping to [0, 1]. With 1 step, no random start and alpha = eps it is FGSM exactly.

Accuracy under attack counts an image as correct only if the model classifies it correctly
both clean and perturbed (the convention of RobustBench and of PyTorch's FGSM tutorial), so
accuracy at eps = 0 is the test accuracy exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from advlab.data import ImageSet, batches, to_float
from advlab.device import evaluating, no_tf32
from advlab.evaluate import predict_logits
from advlab.io import write_csv, write_json
from advlab.params import Pgd, Train


def fgsm_gradient_sign(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """sign(grad_x CE(model(x), y)) for float images x in [0, 1], in fp32 with the model in eval.

    The loss is summed, not averaged, over the batch: each image's gradient is then exactly its
    own loss's gradient, not scaled by 1/batch (which could underflow small entries to 0).
    """
    was_training = model.training
    model.eval()
    with torch.enable_grad(), no_tf32():
        x = x.detach().float().requires_grad_(True)
        loss = F.cross_entropy(model(x).float(), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)  # into grad only: parameters' .grad untouched
    model.train(was_training)
    return grad.sign()


def perturb(x: torch.Tensor, grad_sign: torch.Tensor, eps: float) -> torch.Tensor:
    """The FGSM image, clamped to the valid pixel range; eps = 0 returns x itself."""
    return x if eps == 0 else (x + eps * grad_sign).clamp_(0, 1)


def uniform_start(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Noise uniform in [-1, 1], x's shape: PGD's random start is x + eps * noise.

    Drawn once per batch and scaled by each eps, so the result at one eps does not depend on
    which other eps are attacked. generator None draws from the global generator (training
    seeds it per epoch)."""
    return torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
        step_size: float, start: torch.Tensor | None = None) -> torch.Tensor:
    """L-infinity PGD from x + eps * start (start None: from x itself), clamped to [0, 1].

    Every step: x' += step_size * sign(grad), then x' is projected onto [x - eps, x + eps] and
    clamped to [0, 1]. eps = 0 returns x itself."""
    if eps == 0:
        return x
    x_adv = x if start is None else (x + eps * start).clamp(0, 1)
    for _ in range(steps):
        x_adv = x_adv + step_size * fgsm_gradient_sign(model, x_adv, y)
        x_adv = torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp_(0, 1)
    return x_adv


def adversarial_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                      cfg: Train, start: torch.Tensor | None = None) -> torch.Tensor:
    """The training batch for cfg.adversarial: x itself for `none`; FGSM from a random start
    with step 1.25 * eps for `fgsm_rs` (Wong, Rice and Kolter 2020); PGD with cfg.adv_steps
    steps of 2.5 * eps / steps from a random start for `pgd` (Madry et al. 2018).

    The examples are made with the model in eval mode (as TRADES does), so the attack does
    not update BatchNorm's running statistics and the model is left in the mode it was in.
    `start` is the random start (uniform_start's noise); None draws it from the global
    generator. train_epoch passes its rank's slice of the global batch's noise."""
    if cfg.adversarial == "none":
        return x
    start = uniform_start(x) if start is None else start
    if cfg.adversarial == "fgsm_rs":
        return pgd(model, x, y, cfg.adv_eps, 1, 1.25 * cfg.adv_eps, start).detach()
    return pgd(model, x, y, cfg.adv_eps, cfg.adv_steps, 2.5 * cfg.adv_eps / cfg.adv_steps,
               start).detach()


@torch.inference_mode()
def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits in the same precision context as evaluate.predict_logits."""
    with evaluating(model, x.device):
        return model(x).float()


@dataclass
class AttackResult:
    """Per-eps counts and sums of one method; sweep returns it on the CPU, moved once."""

    method: str  # fgsm | pgd
    epsilons: tuple[float, ...]
    images: int  # test images attacked
    pixels: int  # entries of the input gradient (images x channels x height x width)
    correct: torch.Tensor  # (E,) int64: classified correctly both clean and perturbed
    flipped: torch.Tensor  # (E,) int64: perturbed prediction != clean prediction
    confidence_sum: torch.Tensor  # (E,) float32: sum of the predicted class's probability
    zero_grads: torch.Tensor  # () int64: entries of the clean input's gradient exactly 0
    example_images: torch.Tensor  # (E, C, H, W) the first test image, perturbed at each eps
    example_predictions: torch.Tensor  # (E,) int64
    example_confidence: torch.Tensor  # (E,)
    example_label: torch.Tensor  # () int64

    def cpu(self) -> AttackResult:
        moved = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in vars(self).items()}
        return AttackResult(**moved)

    @property
    def accuracy(self) -> list[float]:
        return [c / self.images for c in self.correct.tolist()]

    @property
    def zero_grad_fraction(self) -> float:
        return int(self.zero_grads) / self.pixels

    def rows(self) -> list[dict[str, float | int]]:
        """One dict per eps: epsilon, accuracy, mean_confidence, flipped."""
        confidence = (self.confidence_sum.double() / self.images).tolist()
        return [
            {"epsilon": eps, "accuracy": round(acc, 6), "mean_confidence": round(conf, 6),
             "flipped": flipped}
            for eps, acc, conf, flipped in zip(self.epsilons, self.accuracy, confidence,
                                               self.flipped.tolist(), strict=True)
        ]


DEFAULT_PGD = Pgd()
Adversary = Callable[[float], torch.Tensor]  # eps -> the perturbed batch


def fgsm_sweep(model: nn.Module, test_set: ImageSet, epsilons: Sequence[float],
               batch_size: int) -> AttackResult:
    """FGSM at every eps over the whole set (see sweep)."""
    return sweep(model, test_set, epsilons, batch_size, "fgsm")


def sweep(model: nn.Module, test_set: ImageSet, epsilons: Sequence[float], batch_size: int,
          method: str, settings: Pgd = DEFAULT_PGD, seed: int = 0) -> AttackResult:
    """One attack method at every eps over the whole set, in batches; no host sync in the loop.

    Clean predictions come from predict_logits with the same batch size as the test stage, and
    eps = 0 reuses them, so accuracy at eps = 0 equals the test accuracy exactly. PGD's random
    start is drawn from a generator seeded with `seed`: the same params give the same result.
    """
    if len(test_set) == 0:
        raise ValueError("the test set is empty: nothing to attack")
    model.eval()
    device = test_set.images.device
    generator = torch.Generator(device=device).manual_seed(seed)
    epsilons = tuple(float(e) for e in epsilons)
    n_eps = len(epsilons)
    clean_logits = predict_logits(model, test_set.images, batch_size)
    correct = torch.zeros(n_eps, dtype=torch.int64, device=device)
    flipped = torch.zeros(n_eps, dtype=torch.int64, device=device)
    confidence = torch.zeros(n_eps, dtype=torch.float32, device=device)
    zero_grads = torch.zeros((), dtype=torch.int64, device=device)
    examples, example_logits = [], []
    for index in batches(len(test_set), batch_size, device=device):
        x, y = to_float(test_set.images[index]), test_set.labels[index]
        clean = clean_logits[index]
        clean_pred = clean.argmax(1)
        clean_ok = clean_pred == y
        grad_sign = fgsm_gradient_sign(model, x, y)
        zero_grads += (grad_sign == 0).sum()
        adversary = _adversary(model, x, y, grad_sign, method, settings, generator)
        for e, eps in enumerate(epsilons):
            x_adv = adversary(eps)
            logits = clean if eps == 0 else _logits(model, x_adv)
            pred = logits.argmax(1)
            correct[e] += (clean_ok & (pred == y)).sum()
            flipped[e] += (pred != clean_pred).sum()
            confidence[e] += logits.softmax(1).amax(1).sum()
            if len(examples) < n_eps:  # the first batch holds test image 0; clone so
                examples.append(x_adv[0].clone())  # the batch it came from can be freed
                example_logits.append(logits[0].clone())
    probs = torch.stack(example_logits).softmax(1)
    return AttackResult(
        method=method, epsilons=epsilons, images=len(test_set),
        pixels=test_set.images.numel(), correct=correct, flipped=flipped,
        confidence_sum=confidence, zero_grads=zero_grads,
        example_images=torch.stack(examples), example_predictions=probs.argmax(1),
        example_confidence=probs.amax(1), example_label=test_set.labels[0],
    ).cpu()


def _adversary(model: nn.Module, x: torch.Tensor, y: torch.Tensor, grad_sign: torch.Tensor,
               method: str, settings: Pgd, generator: torch.Generator) -> Adversary:
    """The perturbed batch as a function of eps, for one method."""
    if method == "fgsm":
        return lambda eps: perturb(x, grad_sign, eps)
    if method == "pgd":
        start = uniform_start(x, generator) if settings.random_start else None
        return lambda eps: pgd(model, x, y, eps, settings.steps,
                               settings.step_scale * eps / settings.steps, start)
    raise ValueError(f"unknown attack method {method!r}")


def summary(results: Sequence[AttackResult]) -> dict:
    """attack.json: per method, metrics keyed by `eps=<value>`, so `dvc metrics show/diff`
    lists each one (e.g. `pgd.accuracy.eps=0.1`)."""
    first = results[0]
    data: dict = {"images": first.images, "epsilons": list(first.epsilons),
                  "methods": [r.method for r in results],
                  "zero_grad_fraction": round(first.zero_grad_fraction, 8)}
    for result in results:
        rows = result.rows()
        data[result.method] = {key: {f"eps={row['epsilon']:g}": row[key] for row in rows}
                               for key in ("accuracy", "mean_confidence", "flipped")}
    return data


def csv_rows(results: Sequence[AttackResult]) -> list[dict[str, str | float | int]]:
    """attack.csv, long format: one row per method and eps. The plots in dvc.yaml draw a line
    per method from the `method` column (template .dvc/plots/by_method.json), so the file and
    the plots stay valid whichever methods ran."""
    return [{"method": result.method, **row} for result in results for row in result.rows()]


def save_metrics(folder: str | Path, results: Sequence[AttackResult] | AttackResult) -> None:
    """attack.json (summary) and attack.csv (one row per eps, for `dvc plots`) in folder."""
    if isinstance(results, AttackResult):
        results = [results]
    folder = Path(folder)
    write_json(folder / "attack.json", summary(results))
    rows = csv_rows(results)
    write_csv(folder / "attack.csv", list(rows[0]), [list(row.values()) for row in rows])
