"""One judge for every verdict, APGD's fooling iterates kept, per-image random draws, and the
cascade's progress: what an attack decided about an image is what attack.json records."""

from __future__ import annotations

import copy
import dataclasses
import re

import pytest
import torch
from torch import nn

import advlab.evaluation.robustness as robustness
from advlab.attacks.apgd import apgd
from advlab.attacks.core import Draws, cross_entropy, judge
from advlab.attacks.registry import ATTACKS
from advlab.core.device import prepare_model
from advlab.data.images import ImageSet, to_float
from advlab.evaluation.robustness import sweep, worst_case
from advlab.params.attack import Apgd, ApgdT, Pgd, Square

CPU = torch.device("cpu")
BUDGETS = {"pgd": Pgd(steps=10), "apgd_ce": Apgd(steps=10), "apgd_t": ApgdT(steps=10, targets=3),
           "square": Square(queries=100)}
EPSILONS = (0.0, 0.02, 0.05)


@pytest.fixture(scope="module")
def images(tiny_sets) -> ImageSet:
    return tiny_sets["test"].subset(torch.arange(60))


class Reports:
    """Wraps the registry's attacks: per (eps, test image), whether the attack reported it
    fooled (by the logits its run returned with the point), the last attack's word kept; and
    per (attack, eps), its word on each test image it attacked."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, test_set: ImageSet) -> None:
        self.row_of = {to_float(img).numpy().tobytes(): i for i, img in enumerate(test_set.images)}
        self.fooled: dict[tuple[float, int], bool] = {}
        self.by_attack: dict[tuple[str, float], dict[int, bool]] = {}
        wrapped = {name: dataclasses.replace(attack, run=self.wrap(name, attack.run))
                   for name, attack in ATTACKS.items() if attack.run is not None}
        monkeypatch.setattr(robustness, "ATTACKS", {**ATTACKS, **wrapped})

    def wrap(self, name, run):
        def reporting(model, x, y, eps, settings, draws):
            judged = run(model, x, y, eps, settings, draws)
            for row, fooled in zip(x, (judged.logits.argmax(1) != y).tolist(), strict=True):
                i = self.row_of[row.numpy().tobytes()]
                self.fooled[eps, i] = self.by_attack.setdefault((name, eps), {})[i] = fooled
            return judged
        return reporting

    def check(self, result) -> None:
        """Image by image: reported fooled at eps (or at a smaller one: inherited) is recorded
        fooled, every other image the attack reported on is recorded robust."""
        assert self.fooled, "no attack ran"
        for e, eps in enumerate(result.epsilons):
            for i in range(result.images):
                if (eps, i) in self.fooled:
                    assert bool(result.robust[e, i]) == (not self.fooled[eps, i]), (eps, i)
                elif eps > 0 and not result.robust[e, i] and result.robust[0, i]:
                    assert any(self.fooled.get((smaller, i), False)
                               for smaller in result.epsilons if 0 < smaller < eps), (eps, i)


@pytest.mark.parametrize("name", [*BUDGETS, "worst_case"])
def test_every_verdict_is_the_attacks_own_under_bf16(trained_model, images, monkeypatch, name):
    """bf16 autocast on the CPU, as base.precision: bf16 (or auto on a recent CUDA card)."""
    model = prepare_model(copy.deepcopy(trained_model), CPU, torch.bfloat16)
    reports = Reports(monkeypatch, images)
    if name == "worst_case":
        result = worst_case(model, images, EPSILONS, 32, list(BUDGETS.items()), [], seed=0)
    else:
        result = sweep(model, images, EPSILONS, 32, name, BUDGETS[name], seed=0)
    assert 0 < result.correct[-1] < result.correct[0], "the attack fools some images, not all"
    reports.check(result)


class Spy(nn.Module):
    """The model, recording every input and output: every iterate an attack evaluates."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.seen = model, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        self.seen.append((x.detach().clone(), out.detach().float().argmax(1)))
        return out


def nearest_image(points: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """For each point, the clean image it is an L-infinity perturbation of (the closest)."""
    return torch.cdist(points.flatten(1), clean.flatten(1), p=float("inf")).argmin(1)


@pytest.mark.parametrize("eps", [0.02, 0.05])
def test_apgd_records_every_image_fooled_at_some_iterate(trained_model, tiny_sets, eps):
    """steps 10: a checkpoint at almost every iteration, where a halved image goes back to its
    best point, which need not fool."""
    test_set = tiny_sets["test"].subset(torch.arange(100))
    spy = Spy(trained_model).eval()
    result = sweep(spy, test_set, (0.0, eps), 100, "apgd_ce", Apgd(steps=10), seed=0)
    clean = to_float(test_set.images)
    fooled = torch.zeros(len(test_set), dtype=torch.bool)
    for points, predicted in spy.seen:
        image = nearest_image(points, clean)
        fooled[image[predicted != test_set.labels[image]]] = True
    fooled &= result.robust[0]  # wrong clean: never attacked, recorded wrong
    assert fooled.sum() >= 5
    assert not (fooled & result.robust[1]).any(), torch.nonzero(fooled & result.robust[1])


@pytest.mark.parametrize("name", ["apgd_t", "square"])
def test_draws_are_per_image_whatever_the_batch_and_the_other_images(trained_model, images,
                                                                      name):
    """Every image at eps 0.05 gets the same attack alone in a batch of 7 as in one of 60, and
    in a cascade after PGD (which leaves only some of them to attack) as in a sweep."""
    epsilons, budget = (0.0, 0.05), {"apgd_t": ApgdT(steps=5, targets=2),
                                     "square": Square(queries=30)}[name]
    whole = sweep(trained_model, images, epsilons, 60, name, budget, seed=0)
    small = sweep(trained_model, images, epsilons, 7, name, budget, seed=0)
    assert torch.equal(whole.predictions, small.predictions)
    assert torch.allclose(whole.confidences, small.confidences, atol=1e-5)
    pgd = sweep(trained_model, images, epsilons, 60, "pgd", Pgd(steps=2), seed=0)
    after = worst_case(trained_model, images, epsilons, 9, [(name, budget)], [pgd], seed=0)
    left = pgd.robust[1]  # what the cascade attacked
    assert 0 < left.sum() < pgd.robust[0].sum()
    assert torch.equal(after.predictions[1, left], whole.predictions[1, left])
    other = sweep(trained_model, images, epsilons, 60, name, budget, seed=1)
    assert not torch.equal(other.confidences, whole.confidences), "base.seed draws anew"


def test_the_cascade_attacks_only_the_images_still_standing(trained_model, images,
                                                           monkeypatch):
    """At each eps, each attack of the cascade gets exactly the images that the earlier
    results (attack.methods), the smaller eps and the attacks before it left standing, and
    what any of them fooled stays fooled. A weak earlier result (Square, 10 queries) leaves
    standing at 0.05 some of the images the cascade fooled at 0.02."""
    weak = sweep(trained_model, images, EPSILONS, 60, "square", Square(queries=10), seed=0)
    reports = Reports(monkeypatch, images)
    ensemble = [("apgd_ce", Apgd(steps=3)), ("square", Square(queries=20))]
    worst = worst_case(trained_model, images, EPSILONS, 60, ensemble, [weak], seed=0)
    for e in (1, 2):  # the smaller eps of eps number e is e - 1 (eps 0: the clean verdict)
        standing = weak.robust[e] & worst.robust[e - 1]
        assert 0 < standing.sum() < weak.robust[e - 1].sum(), "the earlier result fooled some"
        for name, _ in ensemble:
            verdicts = reports.by_attack.get((name, EPSILONS[e]), {})
            assert sorted(verdicts) == torch.nonzero(standing).flatten().tolist(), (name, e)
            standing[[i for i, fooled in verdicts.items() if fooled]] = False
        assert torch.equal(worst.robust[e], standing), e
    assert any(reports.by_attack["apgd_ce", 0.02].values()), "the first attack fools some"
    assert (weak.robust[2] & ~worst.robust[1]).any(), "the cascade's verdicts at 0.02 carried"


def test_the_cascade_prints_each_attacks_robust_accuracy_and_shows_a_bar(trained_model, images,
                                                                         capsys):
    ensemble = [("apgd_ce", Apgd(steps=3)), ("square", Square(queries=20))]
    result = worst_case(trained_model, images, EPSILONS, 32, ensemble, [], seed=0)
    out, err = capsys.readouterr()
    lines = re.findall(r"^attack: worst_case eps (\S+) robust accuracy after (\w+): "
                       r"(\d+\.\d\d)% \(\d+\.\d s\)$", out, re.MULTILINE)
    assert [(eps, name) for eps, name, _ in lines] == [
        (eps, name) for eps in ("0.02", "0.05") for name in ("apgd_ce", "square")]
    for eps, name, accuracy in lines:
        e = EPSILONS.index(float(eps))
        assert float(accuracy) == pytest.approx(100 * result.after[name][e], abs=0.005)
    assert "apgd_ce eps 0.05" in err and "image" in err  # tqdm's bar, on stderr


def test_apgd_keeps_a_fooling_iterate_that_a_checkpoint_would_reset(trained_model, tiny_sets):
    """A loss whose value never rises (its gradient the cross-entropy's): every checkpoint
    halves the step and moves the image back to its start, right after the step that fooled
    it. steps 10 checks after every iteration from the second on."""
    x, y = to_float(tiny_sets["test"].images[:100]), tiny_sets["test"].labels[:100]
    correct = judge(trained_model, x).argmax(1) == y
    x, y = x[correct], y[correct]

    def flat(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        ce = cross_entropy(logits, labels)
        return ce - ce.detach()

    spy = Spy(trained_model).eval()
    eps = 0.03
    draws = Draws.keyed(0, "apgd_ce", eps, torch.arange(len(x)), x.shape[1:])
    out = apgd(spy, x, y, eps, 10, lambda index: flat, draws.start)
    fooled = torch.zeros(len(x), dtype=torch.bool)
    for points, predicted in spy.seen:
        image = nearest_image(points, x)
        fooled[image[predicted != y[image]]] = True
    assert fooled.sum() >= 5
    recorded = judge(trained_model, out.x).argmax(1) != y
    assert torch.equal(recorded, out.logits.argmax(1) != y)
    assert not (fooled & ~recorded).any(), torch.nonzero(fooled & ~recorded)
