"""Attacks swept over eps on a test set: per-method results, and the worst case over attacks.

Accuracy under attack counts an image as correct only if the model classifies it correctly
both clean and perturbed (the convention of RobustBench and of PyTorch's FGSM tutorial), so
accuracy at eps = 0 is the test accuracy exactly.

Cost follows what is left to attack: an attack with a `run` (every attack but FGSM) attacks
only the images classified correctly on clean input (the others count as wrong whatever it
does: their prediction and confidence stay the clean ones, not flipped), stops on an image
at its first fooling iterate, and goes through the eps in increasing order: an image fooled at
a smaller eps counts as fooled at every larger one by the same image (it lies in the larger
ball), so only the survivors are attacked again and accuracy never rises with eps. FGSM keeps
the lab's fast path: one gradient per batch serves every eps, and every image is perturbed.
The worst case runs the ensemble as a cascade (AutoAttack): at each eps, each attack only on
the images every earlier attack left standing. Each (eps, attack) shows a progress bar over
the images it attacks, and the cascade prints the robust accuracy after each attack.

An attack's verdict on an image is recorded from the logits it decided on (core.Judged: one
judge), and its random draws are keyed by (seed, attack, eps, image index) (core.Draws): the
same params give the same per-image results whatever the batch size or the images attacked.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm import tqdm

from advlab.attacks.core import Draws, judge, loss_gradient
from advlab.attacks.fgsm import perturb
from advlab.attacks.registry import ATTACKS, WORST_CASE
from advlab.data.images import ImageSet, stratified_order, to_float
from advlab.evaluation.classification import predict_logits


@dataclass
class AttackResult:
    """Per-eps counts and per-image outcomes of one method; returned on the CPU."""

    method: str  # a name of the registry, or worst_case
    epsilons: tuple[float, ...]
    images: int  # test images attacked
    pixels: int  # entries of the input gradient (images x channels x height x width)
    correct: torch.Tensor  # (E,) int64: classified correctly both clean and perturbed
    flipped: torch.Tensor  # (E,) int64: perturbed prediction != clean prediction
    confidence_sum: torch.Tensor  # (E,) float32: sum of the predicted class's probability
    zero_grads: torch.Tensor  # () int64: entries of the clean input's gradient exactly 0
    example_images: torch.Tensor  # (E, C, H, W) the first test image, perturbed at each eps
    example_probs: torch.Tensor  # (E, classes) its class probabilities
    example_label: torch.Tensor  # () int64
    robust: torch.Tensor  # (E, N) bool: image n correct clean and perturbed at eps e
    predictions: torch.Tensor  # (E, N) int64: the prediction on the perturbed image
    confidences: torch.Tensor  # (E, N) float32: that prediction's probability
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per attack
    after: dict[str, list[float]] = field(default_factory=dict)  # worst case: accuracy per
    #                                       eps after each attack of the cascade, cumulative

    def cpu(self) -> AttackResult:
        moved = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in vars(self).items()}
        return AttackResult(**moved)

    @property
    def accuracy(self) -> list[float]:
        return [c / self.images for c in self.correct.tolist()]

    @property
    def example_predictions(self) -> torch.Tensor:
        return self.example_probs.argmax(1)

    @property
    def example_confidence(self) -> torch.Tensor:
        return self.example_probs.amax(1)

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


@dataclass
class _Outcome:
    """Per-image predictions and confidences at every eps, filled in as attacks run."""

    labels: torch.Tensor
    clean_logits: torch.Tensor
    predictions: torch.Tensor  # (E, N)
    confidences: torch.Tensor  # (E, N)
    examples: list[torch.Tensor]  # image 0 at each eps
    example_probs: list[torch.Tensor]  # its class probabilities

    @classmethod
    def clean(cls, model: nn.Module, test_set: ImageSet, n_eps: int,
              batch_size: int) -> _Outcome:
        if len(test_set) == 0:
            raise ValueError("the test set is empty: nothing to attack")
        model.eval()
        logits = predict_logits(model, test_set.images, batch_size)
        probs = logits.softmax(1)
        x0 = to_float(test_set.images[:1])[0]
        return cls(test_set.labels, logits, logits.argmax(1).repeat(n_eps, 1),
                   probs.amax(1).repeat(n_eps, 1), [x0] * n_eps, [probs[0]] * n_eps)

    @property
    def clean_ok(self) -> torch.Tensor:
        return self.clean_logits.argmax(1) == self.labels

    def standing(self, e: int) -> torch.Tensor:
        """(N,) bool: correct clean and at eps number e so far."""
        return self.clean_ok & (self.predictions[e] == self.labels)

    def inherit(self, e: int, smaller: int, fooled: torch.Tensor) -> None:
        """The images `fooled` at eps number `smaller` are fooled at e by the same image: it
        lies in the larger ball too."""
        self.predictions[e, fooled] = self.predictions[smaller, fooled]
        self.confidences[e, fooled] = self.confidences[smaller, fooled]
        if fooled[0]:
            self.examples[e] = self.examples[smaller]
            self.example_probs[e] = self.example_probs[smaller]

    def record(self, e: int, index: torch.Tensor, x_adv: torch.Tensor,
               logits: torch.Tensor) -> None:
        """The outcome at eps number e of the images test_set[index] attacked into x_adv."""
        probs = logits.softmax(1)
        self.predictions[e, index] = probs.argmax(1)
        self.confidences[e, index] = probs.amax(1)
        if index[0] == 0:  # image 0 comes first if at all: one host sync per batch
            self.examples[e] = x_adv[0].clone()  # clone: the batch can be freed
            self.example_probs[e] = probs[0].clone()

    def result(self, method: str, epsilons: tuple[float, ...], pixels: int,
               zero_grads: torch.Tensor, seconds: dict[str, float]) -> AttackResult:
        robust = self.clean_ok & (self.predictions == self.labels)  # (E, N)
        probs = torch.stack(self.example_probs)
        return AttackResult(
            method=method, epsilons=epsilons, images=len(self.labels), pixels=pixels,
            correct=robust.sum(1), flipped=(self.predictions != self.clean_logits.argmax(1)).sum(1),
            confidence_sum=self.confidences.sum(1), zero_grads=zero_grads,
            example_images=torch.stack(self.examples), example_probs=probs,
            example_label=self.labels[0], robust=robust,
            predictions=self.predictions, confidences=self.confidences, seconds=seconds,
        ).cpu()


def fgsm_sweep(model: nn.Module, test_set: ImageSet, epsilons: Sequence[float],
               batch_size: int) -> AttackResult:
    """FGSM at every eps over the whole set (see sweep)."""
    return sweep(model, test_set, epsilons, batch_size, "fgsm")


def sweep(model: nn.Module, test_set: ImageSet, epsilons: Sequence[float], batch_size: int,
          method: str, settings: object = None, seed: int = 0) -> AttackResult:
    """One attack at every eps over the set, in batches.

    Clean predictions come from predict_logits with the same batch size as the test stage, and
    eps = 0 reuses them, so accuracy at eps = 0 equals the test accuracy exactly. Attacks with
    a `run` go through the eps in increasing order, each on the images no smaller eps fooled
    (those stay fooled by the same image). Random draws are keyed by (seed, method, eps,
    image): the same params give the same result."""
    attack = ATTACKS[method]
    if attack.section is not None and settings is None:
        raise ValueError(f"attack {method!r} needs its settings (params.attack.{attack.section})")
    epsilons = tuple(float(e) for e in epsilons)
    began = time.perf_counter()
    outcome = _Outcome.clean(model, test_set, len(epsilons), batch_size)
    zero_grads = _fgsm_pass(model, test_set, epsilons, batch_size, outcome,
                            attack_all=attack.run is None)
    if attack.run is not None:
        for e, smaller in _increasing(epsilons):
            standing = outcome.clean_ok if smaller is None else outcome.standing(smaller)
            if smaller is not None:
                outcome.inherit(e, smaller, outcome.clean_ok & ~standing)
            _attack(model, test_set, outcome, e, epsilons[e], standing,
                    _Job(method, settings, batch_size, seed))
    result = outcome.result(method, epsilons, test_set.images.numel(), zero_grads, {})
    result.seconds[method] = time.perf_counter() - began  # .cpu() synchronized the device
    return result


def _increasing(epsilons: tuple[float, ...]) -> list[tuple[int, int | None]]:
    """(index of eps, index of the next smaller non-zero eps or None) for every eps > 0, by
    increasing eps."""
    order = sorted((i for i, eps in enumerate(epsilons) if eps > 0), key=epsilons.__getitem__)
    return list(zip(order, [None, *order[:-1]], strict=True))


def _fgsm_pass(model: nn.Module, test_set: ImageSet, epsilons: tuple[float, ...],
               batch_size: int, outcome: _Outcome, attack_all: bool) -> torch.Tensor:
    """The clean input gradient of every image (its zero entries hint at gradient masking);
    with attack_all, FGSM at every eps from it, recorded in outcome. No host sync."""
    device = test_set.images.device
    zero_grads = torch.zeros((), dtype=torch.int64, device=device)
    for index in torch.arange(len(test_set), device=device).split(batch_size):
        x, y = to_float(test_set.images[index]), test_set.labels[index]
        grad_sign = loss_gradient(model, x, y)[2].sign()
        zero_grads += (grad_sign == 0).sum()
        for e, eps in enumerate(epsilons):
            if attack_all and eps > 0:
                x_adv = perturb(x, grad_sign, eps)
                outcome.record(e, index, x_adv, judge(model, x_adv))
    return zero_grads


@dataclass(frozen=True)
class _Job:
    """One attack of a sweep or a cascade: its registry name, settings, batch size, base seed."""

    name: str
    settings: object
    batch_size: int
    seed: int


def _attack(model: nn.Module, test_set: ImageSet, outcome: _Outcome, e: int, eps: float,
            standing: torch.Tensor, job: _Job) -> None:
    """job's attack at eps on the images where `standing` (N,) holds, in batches, under a
    progress bar; each image's outcome is recorded from the logits the attack decided on."""
    run = ATTACKS[job.name].run
    index = torch.nonzero(standing).flatten()
    with tqdm(total=len(index), desc=f"{job.name} eps {eps:.3g}", unit="image",
              dynamic_ncols=True, leave=False) as bar:
        for batch in index.split(job.batch_size):
            if len(batch) == 0:  # split of an empty tensor yields it once
                break
            x, y = to_float(test_set.images[batch]), test_set.labels[batch]
            draws = Draws.keyed(job.seed, job.name, eps, batch, test_set.shape)
            judged = run(model, x, y, eps, job.settings, draws)
            outcome.record(e, batch, judged.x, judged.logits)
            bar.update(len(batch))


def worst_case(model: nn.Module, test_set: ImageSet, epsilons: Sequence[float],
               batch_size: int, ensemble: Sequence[tuple[str, object]],
               earlier: Sequence[AttackResult], seed: int = 0) -> AttackResult:
    """The robust accuracy of record: an image counts as correct at an eps only if no attack
    fooled it, neither the earlier results (attack.methods) nor the ensemble, which runs as a
    cascade, each attack only on the images still standing, eps by increasing eps (an image
    fooled at a smaller eps is fooled at a larger one by the same image). `after` holds the
    cumulative accuracy after each ensemble attack; prediction and confidence are those of the
    first fooling image, else of the last attack's point, else (wrong clean) of the clean
    image."""
    epsilons = tuple(float(e) for e in epsilons)
    outcome = _Outcome.clean(model, test_set, len(epsilons), batch_size)
    standing = outcome.clean_ok.repeat(len(epsilons), 1)
    for result in earlier:  # the first result that fooled an image provides its outcome
        fooled = (standing & ~result.robust.to(standing.device))
        outcome.predictions[fooled] = result.predictions.to(standing.device)[fooled]
        outcome.confidences[fooled] = result.confidences.to(standing.device)[fooled]
        for e in range(len(epsilons)):
            if fooled[e, 0]:
                outcome.examples[e] = result.example_images[e].to(standing.device)
                outcome.example_probs[e] = result.example_probs[e].to(standing.device)
        standing &= ~fooled
    seconds = {name: 0.0 for name, _ in ensemble}
    after = {name: (standing.sum(1).double() / len(test_set)).tolist() for name, _ in ensemble}
    for e, smaller in _increasing(epsilons):
        if smaller is not None:  # fooled at a smaller eps by any attack: fooled here too
            carried = standing[e] & ~outcome.standing(smaller)
            outcome.inherit(e, smaller, carried)
            standing[e] &= ~carried
        for name, settings in ensemble:
            began = time.perf_counter()
            _attack(model, test_set, outcome, e, epsilons[e], standing[e],
                    _Job(name, settings, batch_size, seed))
            standing[e] &= outcome.predictions[e] == outcome.labels
            after[name][e] = standing[e].sum().item() / len(test_set)  # syncs: honest time
            took = time.perf_counter() - began
            seconds[name] += took
            print(f"attack: {WORST_CASE} eps {epsilons[e]:.3g} robust accuracy after {name}: "
                  f"{after[name][e]:.2%} ({took:.1f} s)", flush=True)
    first = earlier[0] if earlier else None
    zero_grads = first.zero_grads if first is not None else torch.zeros((), dtype=torch.int64)
    result = outcome.result(WORST_CASE, epsilons, test_set.images.numel(), zero_grads, seconds)
    result.after = {name: [round(a, 6) for a in values] for name, values in after.items()}
    return result


def attack_subset(test_set: ImageSet, max_images: int | None, seed: int) -> ImageSet:
    """A fixed, seeded, stratified subset of max_images test images (in test-set order), or
    the whole set for None or a number at least its size."""
    if max_images is None or max_images >= len(test_set):
        return test_set
    generator = torch.Generator().manual_seed(seed)
    order = stratified_order(test_set.labels.cpu(), generator)
    return test_set.subset(order[:max_images].sort().values.to(test_set.labels.device))
