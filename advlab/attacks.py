"""FGSM (the lab's Problem 5): x' = clamp(x + eps * sign(grad_x CE(model(x), y)), 0, 1).

Pixels are in [0, 1] and the model normalizes them itself, so eps is in pixel units and the
clamp keeps x' a valid image. The gradient does not depend on eps: it is computed once per
batch (fp32, eval mode) and reused for every eps, one forward pass each.

Accuracy under attack counts an image as correct only if the model classifies it correctly
both clean and perturbed (the convention of RobustBench and of PyTorch's FGSM tutorial), so
accuracy at eps = 0 is the test accuracy exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from advlab.data import ImageSet, batches, to_float
from advlab.device import autocast
from advlab.evaluate import predict_logits
from advlab.io import write_csv, write_json


def fgsm_gradient_sign(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """sign(grad_x CE(model(x), y)) for float images x in [0, 1], in fp32 with the model in eval.

    The loss is summed, not averaged, over the batch: each image's gradient is then exactly its
    own loss's gradient, not scaled by 1/batch (which could underflow small entries to 0).
    """
    was_training = model.training
    model.eval()
    with torch.enable_grad():
        x = x.detach().float().requires_grad_(True)
        loss = F.cross_entropy(model(x).float(), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)  # into grad only: parameters' .grad untouched
    model.train(was_training)
    return grad.sign()


def perturb(x: torch.Tensor, grad_sign: torch.Tensor, eps: float) -> torch.Tensor:
    """The FGSM image, clamped to the valid pixel range; eps = 0 returns x itself."""
    return x if eps == 0 else (x + eps * grad_sign).clamp_(0, 1)


@torch.inference_mode()
def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits in the same precision context as evaluate.predict_logits."""
    with autocast(x.device):
        return model(x).float()


@dataclass
class AttackResult:
    """Per-eps counts and sums; fgsm_sweep returns it on the CPU, moved once at the end."""

    epsilons: tuple[float, ...]
    images: int  # test images attacked
    pixels: int  # entries of the input gradient (images x channels x height x width)
    correct: torch.Tensor  # (E,) int64: classified correctly both clean and perturbed
    flipped: torch.Tensor  # (E,) int64: perturbed prediction != clean prediction
    confidence_sum: torch.Tensor  # (E,) float32: sum of the predicted class's probability
    zero_grads: torch.Tensor  # () int64: gradient entries exactly 0 (sign 0: pixel unperturbed)
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


def fgsm_sweep(model: nn.Module, test_set: ImageSet, epsilons: Sequence[float],
               batch_size: int) -> AttackResult:
    """FGSM at every eps over the whole set, in batches; no host sync inside the loop.

    Clean predictions come from predict_logits with the same batch size as the test stage, and
    eps = 0 reuses them, so accuracy at eps = 0 equals the test accuracy exactly.
    """
    if len(test_set) == 0:
        raise ValueError("the test set is empty: nothing to attack")
    model.eval()
    device = test_set.images.device
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
        for e, eps in enumerate(epsilons):
            x_adv = perturb(x, grad_sign, eps)
            logits = clean if eps == 0 else _logits(model, x_adv)
            pred = logits.argmax(1)
            correct[e] += (clean_ok & (pred == y)).sum()
            flipped[e] += (pred != clean_pred).sum()
            confidence[e] += logits.softmax(1).amax(1).sum()
            if len(examples) < n_eps:  # the first batch holds test image 0
                examples.append(x_adv[0])
                example_logits.append(logits[0])
    probs = torch.stack(example_logits).softmax(1)
    return AttackResult(
        epsilons=epsilons, images=len(test_set), pixels=test_set.images.numel(),
        correct=correct, flipped=flipped, confidence_sum=confidence, zero_grads=zero_grads,
        example_images=torch.stack(examples), example_predictions=probs.argmax(1),
        example_confidence=probs.amax(1), example_label=test_set.labels[0],
    ).cpu()


def summary(result: AttackResult) -> dict:
    """attack.json: metrics keyed by `eps=<value>`, so `dvc metrics show/diff` lists each one."""
    rows = result.rows()
    by_eps = {key: {f"eps={row['epsilon']:g}": row[key] for row in rows}
              for key in ("accuracy", "mean_confidence", "flipped")}
    return {"images": result.images, "epsilons": list(result.epsilons), **by_eps,
            "zero_grad_fraction": round(result.zero_grad_fraction, 8)}


def save_metrics(folder: str | Path, result: AttackResult) -> None:
    """attack.json (summary) and attack.csv (one row per eps, for `dvc plots`) in folder."""
    folder = Path(folder)
    rows = result.rows()
    write_json(folder / "attack.json", summary(result))
    write_csv(folder / "attack.csv", list(rows[0]), [list(row.values()) for row in rows])
