"""AutoAttack's attacks and the worst case: APGD takes the reference APGD's steps and is at
least as strong as PGD, every attack stays in the eps-ball, Square never asks for a gradient
and sees through masked gradients, the cascade is never above any single attack, and the
cost-saving rules keep fooling points."""

from __future__ import annotations

import pytest
import torch
from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted
from torch import nn

import advlab.attacks.apgd as apgd_module
from advlab.attacks.apgd import apgd, apgd_t, checkpoints, dlr_targeted
from advlab.attacks.core import Draws, Judged, Loss, cross_entropy, judge
from advlab.attacks.pgd import pgd, pgd_until_fooled
from advlab.attacks.registry import ATTACKS
from advlab.attacks.square import square_fraction
from advlab.data.images import ImageSet, to_float
from advlab.evaluation.attack_metrics import summary
from advlab.evaluation.robustness import attack_subset, fgsm_sweep, sweep, worst_case
from advlab.params import parse_params
from advlab.params.attack import Apgd, ApgdT, FabT, Pgd, Square
from advlab.params.fields import ParamsError

EPSILONS = (0.0, 0.02, 0.05)
SETTINGS = {"pgd": Pgd(steps=10), "apgd_ce": Apgd(steps=10), "apgd_t": ApgdT(steps=10, targets=3),
            "fab_t": FabT(steps=10, targets=3), "square": Square(queries=100)}


@pytest.fixture(scope="module")
def small(trained_model, tiny_sets) -> tuple[nn.Module, ImageSet]:
    """The shared tiny trained model and 100 of its test images."""
    return trained_model, tiny_sets["test"].subset(torch.arange(100))


def draws_for(x: torch.Tensor, attack: str, eps: float, seed: int = 0) -> Draws:
    """The draws the sweep would give x as images 0..n-1 of its set."""
    return Draws.keyed(seed, attack, eps, torch.arange(len(x)), x.shape[1:])


def correctly_classified(model: nn.Module, data: ImageSet, n: int) -> tuple[torch.Tensor, ...]:
    x, y = to_float(data.images), data.labels
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    return x[ok][:n], y[ok][:n]


def test_apgd_schedule_is_the_papers():
    # p_0 = 0, p_1 = 0.22, p_j+1 = p_j + max(p_j - p_j-1 - 0.03, 0.06): 22, 41, 57, 70, 80, ...
    assert checkpoints(100)[:5] == [22, 41, 57, 70, 80]
    marks = checkpoints(100)
    assert all(b - a >= 6 for a, b in zip(marks, marks[1:], strict=False))
    assert checkpoints(1) == [1]
    # p halves past 10, 50, 200, ... of 10,000 queries, rescaled: 5, 25, 100, ... of 5,000
    assert [square_fraction(0.8, q, 5000, rescale=True) for q in (0, 5, 6, 25, 26, 101)] == [
        0.8, 0.8, 0.4, 0.4, 0.2, 0.1]
    # as AutoAttack runs it (resc_schedule=False): after proposal 10, 50, 200, ... whatever
    # the budget, so 5,000 queries never reach the last two halvings
    assert [square_fraction(0.8, q, 5000) for q in (10, 11, 50, 51, 4999)] == [
        0.8, 0.4, 0.4, 0.2, 0.8 / 2 ** 7]


class Sine(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(x)


def reference_apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                   noise: torch.Tensor, monkeypatch: pytest.MonkeyPatch, loss=None,
                   target: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's one APGD run (100 steps) from x + eps * noise / max|noise|: its best
    points and which images it fooled. loss: the targeted loss in place of its DLR."""
    if target is None:
        ref = APGDAttack(model, n_iter=100, eps=eps, loss="ce", device=x.device)
    else:
        ref = APGDAttack_targeted(model, n_iter=100, eps=eps, device=x.device)
        ref.y_target = target
        if loss is not None:
            ref.dlr_loss_targeted = loss
    ref.init_hyperparam(x)
    with monkeypatch.context() as patch:  # its start: torch.rand, drawn once
        patch.setattr(torch, "rand", lambda *args, **kwargs: (noise + 1) / 2)
        best, robust, _, _ = ref.attack_single_run(x, y)
    return best, ~robust


def test_apgd_takes_the_reference_apgds_steps(monkeypatch):
    """From the same start, every image ends where the reference's APGD (autopgd_base.py) ends:
    the same step size, momentum, checkpoints, halving rule and restarts from the best point.
    A sine layer makes the loss oscillate, so that steps are halved; a scripted loss value
    makes the best loss stall while the loss keeps rising. (The reference counts the first
    window's first step as a rise when its loss is > 0, not > the start's: these cases avoid
    that difference, which the paper's rule does not have.) Every other test passes with
    momentum 0.25 or without the stall rule."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 64), Sine(), nn.Linear(64, 10))
    model.eval()[1].weight.data.mul_(3)
    x = torch.rand(100, 3, 8, 8)
    with torch.no_grad():
        ranked = model(x).argsort(1, descending=True)
    y, target, noise = ranked[:, 0], ranked[:, 1], torch.rand(x.shape) * 2 - 1
    script = [0.0, *range(1, 23), *(0.1 * k for k in range(1, 20))] + [30.0] * 60
    calls = []

    def scripted(target: torch.Tensor) -> Loss:
        """Rises for 22 steps, falls, then rises for 19 steps below its best (a stall), then
        stays put; its gradient is the targeted DLR loss's."""
        def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            dlr = dlr_targeted(target)(logits, labels)
            calls.append(None)
            return dlr - dlr.detach() + script[min(len(calls), len(script)) - 1]
        return loss

    cases = ((0.01, lambda index: cross_entropy, None, None),
             (0.03, lambda index: cross_entropy, None, None),
             (0.01, lambda index: dlr_targeted(target[index]), None, target),
             (0.01, lambda index: scripted(target[index]), scripted(target), target))
    for eps, loss_for, reference_loss, reference_target in cases:
        calls.clear()
        ours = apgd(model, x, y, eps, 100, loss_for, noise)
        calls.clear()
        best, fooled = reference_apgd(model, x, y, eps, noise, monkeypatch, reference_loss,
                                      reference_target)
        assert 0 < fooled.sum() < len(y), "some images fooled, some standing"
        assert torch.equal(ours.logits.argmax(1) != y, fooled), eps
        assert torch.equal(ours.x[~fooled], best[~fooled]), eps


def test_apgd_t_takes_its_targets_in_the_references_order(linear_classifier, monkeypatch):
    """Target k is the reference's (autopgd_base.py, APGDAttack_targeted.perturb): the class of
    the (k + 2)-th highest clean logit. Both APGD runs are stubbed to fool nothing, so every
    target runs on every image and only the order of the targets is compared."""
    model, x, y = linear_classifier
    ours, theirs = [], []

    def recording(target: torch.Tensor) -> Loss:
        ours.append(target.clone())
        return dlr_targeted(target)

    def standing(model, x, y, eps, steps, loss_for, start) -> Judged:
        loss_for(torch.arange(len(x)))
        return Judged(x.clone(), judge(model, x))

    monkeypatch.setattr(apgd_module, "dlr_targeted", recording)
    monkeypatch.setattr(apgd_module, "apgd", standing)
    apgd_t(model, x, y, 0.03, ApgdT(steps=1, targets=4), draws_for(x, "apgd_t", 0.03))
    ref = APGDAttack_targeted(model, n_iter=1, eps=0.03, n_target_classes=4, device=x.device)

    def ref_run(x_to_fool, y_to_fool):
        theirs.append(ref.y_target.clone())
        return x_to_fool, torch.ones_like(y_to_fool, dtype=torch.bool), None, x_to_fool

    ref.attack_single_run = ref_run
    ref.perturb(x, y)
    assert len(ours) == len(theirs) == 4
    for k, (mine, reference) in enumerate(zip(ours, theirs, strict=True)):
        assert torch.equal(mine, reference), f"target {k}"


def test_apgd_ce_is_at_least_as_strong_as_pgd10(small):
    model, test_set = small
    strong = sweep(model, test_set, EPSILONS, 100, "apgd_ce", Apgd(steps=20), seed=0)
    base = sweep(model, test_set, EPSILONS, 100, "pgd", Pgd(steps=10), seed=0)
    assert strong.correct[0] == base.correct[0]
    noise = 1  # image: random starts differ
    assert (strong.correct <= base.correct + noise).all(), (strong.accuracy, base.accuracy)
    assert strong.correct.sum() <= base.correct.sum(), (strong.accuracy, base.accuracy)


@pytest.mark.parametrize("name", [n for n, a in ATTACKS.items() if a.run is not None])
def test_every_attack_stays_in_the_eps_ball_and_the_pixel_range(small, name):
    model, test_set = small
    x, y = correctly_classified(model, test_set, 24)
    for eps in (0.02, 0.3):
        x_adv = ATTACKS[name].run(model, x, y, eps, SETTINGS[name], draws_for(x, name, eps)).x
        assert x_adv.shape == x.shape
        assert x_adv.min() >= 0 and x_adv.max() <= 1
        assert (x_adv - x).abs().max() <= eps + 1e-6
        if eps == 0.3:  # and it does attack: at a large eps every attack fools some images
            with torch.no_grad():
                assert (model(x_adv).argmax(1) != y).any(), f"{name} fools nothing"


def test_square_makes_no_gradient_call(small, monkeypatch):
    model, test_set = small
    x, y = correctly_classified(model, test_set, 24)

    def refuse(*args, **kwargs):
        raise AssertionError("Square asked for a gradient")

    monkeypatch.setattr(torch.autograd, "grad", refuse)
    monkeypatch.setattr(torch.Tensor, "backward", refuse)
    with torch.inference_mode():  # any graph-building op would fail on these tensors
        x_adv = ATTACKS["square"].run(model, x, y, 0.1, Square(queries=100),
                                      draws_for(x, "square", 0.1)).x
    assert ATTACKS["square"].gradient_free
    with torch.no_grad():
        assert (model(x_adv).argmax(1) != y).sum() >= len(y) // 4


def test_square_puts_every_pixel_at_eps_from_the_clean_one(linear_classifier):
    """Its stripes and its squares move a pixel to x +- eps, or to 0 or 1 where clamped: never
    by less (as the reference's square.py, at any budget)."""
    model, x, y = linear_classifier
    eps = 0.05
    out = ATTACKS["square"].run(model, x, y, eps, Square(queries=50), draws_for(x, "square", eps))
    moved = out.x - x
    assert (((moved.abs() - eps).abs() <= 1e-6) | (out.x == 0) | (out.x == 1)).all()
    assert (moved.sign() != moved[:, :, :1].sign()).any(), "squares kept, not only stripes"


class Rounding(nn.Module):
    """Quantizes pixels to 1/255 steps: the images are unchanged, the gradient is zero."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 255) / 255


def test_masked_gradients_fool_fgsm_and_pgd_but_not_square(small):
    model, test_set = small
    masked = nn.Sequential(Rounding(), model).eval()
    epsilons = (0.0, 0.05)
    fgsm = fgsm_sweep(masked, test_set, epsilons, 100)
    strong = sweep(masked, test_set, epsilons, 100, "pgd", Pgd(steps=10), seed=0)
    black_box = sweep(masked, test_set, epsilons, 100, "square",  # a short budget: rescaled
                      Square(queries=200, rescale=True), seed=0)
    unmasked = sweep(model, test_set, epsilons, 100, "pgd", Pgd(steps=10), seed=0)
    assert fgsm.zero_grad_fraction == 1.0, "the flag: every input-gradient entry is 0"
    assert unmasked.zero_grad_fraction < 0.5
    assert fgsm.correct[1] == fgsm.correct[0], "FGSM moves no pixel: looks perfectly robust"
    assert strong.correct[1] >= strong.correct[0] - 5, "PGD moves only by its random start"
    assert black_box.correct[1] <= strong.correct[1] - 20, (black_box.accuracy, strong.accuracy)
    assert unmasked.correct[1] <= strong.correct[1] - 20


def test_early_stopping_keeps_every_image_the_last_iterate_fooled(small):
    model, test_set = small
    x, y = correctly_classified(model, test_set, 60)
    eps, settings = 0.03, Pgd(steps=10)
    draws = draws_for(x, "pgd", eps, seed=5)
    last = pgd(model, x, y, eps, settings.steps, settings.step_scale * eps / settings.steps,
               draws.start)
    stopped = pgd_until_fooled(model, x, y, eps, settings, draws).x
    with torch.no_grad():
        fooled_last, fooled_stopped = model(last).argmax(1) != y, model(stopped).argmax(1) != y
    assert fooled_last.any() and not fooled_last.all()
    assert not (fooled_last & ~fooled_stopped).any(), "a fooled image must stay fooled"


def test_images_wrong_on_clean_input_are_not_attacked(small):
    model, test_set = small
    result = sweep(model, test_set, EPSILONS, 100, "apgd_ce", Apgd(steps=5), seed=0)
    clean_ok = result.robust[0]
    assert not clean_ok.all()
    clean = result.predictions[0]
    assert torch.equal(result.predictions[:, ~clean_ok], clean[~clean_ok].expand(3, -1))
    assert torch.equal(result.confidences[:, ~clean_ok],
                       result.confidences[0, ~clean_ok].expand(3, -1))


def test_worst_case_is_never_above_any_attack_and_falls_after_each(small):
    model, test_set = small[0], small[1].subset(torch.arange(50))  # every attack runs twice
    singles = [sweep(model, test_set, EPSILONS, 50, m, SETTINGS.get(m), seed=0)
               for m in ("fgsm", "pgd")]
    ensemble = [(m, SETTINGS[m]) for m in ("apgd_ce", "apgd_t", "square")]
    worst = worst_case(model, test_set, EPSILONS, 50, ensemble, singles, seed=0)
    alone = [sweep(model, test_set, EPSILONS, 50, m, s, seed=0) for m, s in ensemble]
    for result in (*singles, *alone):
        assert (worst.correct <= result.correct).all(), result.method
        assert not (worst.robust & ~result.robust).any() or result in alone
    assert worst.correct[0] == singles[0].correct[0], "eps 0 is the clean accuracy"
    after = torch.tensor(list(worst.after.values()))  # (attacks, E), cumulative
    assert (after[1:] <= after[:-1]).all()
    assert after[-1].tolist() == pytest.approx(worst.accuracy)
    for e in range(len(EPSILONS)):
        assert after[0, e] <= min(r.accuracy[e] for r in singles) + 1e-9
    data = summary([*singles, worst])
    assert data["methods"] == ["fgsm", "pgd", "worst_case"]
    assert list(data["worst_case"]["after"]) == ["apgd_ce", "apgd_t", "square"]
    assert set(worst.seconds) == {"apgd_ce", "apgd_t", "square"}


def test_attack_subset_is_stratified_seeded_and_in_order(tiny_sets):
    test_set = tiny_sets["test"]
    subset = attack_subset(test_set, 50, seed=3)
    again = attack_subset(test_set, 50, seed=3)
    assert len(subset) == 50 and torch.equal(subset.images, again.images)
    share = torch.bincount(subset.labels, minlength=10) / 50
    expected = torch.bincount(test_set.labels, minlength=10) / len(test_set)
    assert (share - expected).abs().max() <= 1 / 50 + 1e-9
    assert attack_subset(test_set, None, seed=3) is test_set
    assert attack_subset(test_set, 10_000, seed=3) is test_set
    assert not torch.equal(attack_subset(test_set, 50, seed=4).images, subset.images)


@pytest.mark.parametrize("raw, key", [
    ({"attack": {"ensemble": ["apgd_ce", "fab"]}}, "attack.ensemble"),
    ({"attack": {"ensemble": ["square", "square"]}}, "attack.ensemble"),
    ({"attack": {"methods": ["apgd"]}}, "attack.methods"),
    ({"attack": {"max_images": 0}}, "attack.max_images"),
    ({"attack": {"apgd_ce": {"steps": 0}}}, "attack.apgd_ce.steps"),
    ({"attack": {"apgd_t": {"targets": 0}}}, "attack.apgd_t.targets"),
    ({"attack": {"square": {"queries": 0}}}, "attack.square.queries"),
    ({"attack": {"square": {"p_init": 1.5}}}, "attack.square.p_init"),
])
def test_params_reject_bad_ensembles_and_attack_settings(raw, key):
    with pytest.raises(ParamsError, match=key.replace(".", r"\.")):
        parse_params(raw)


def test_params_accept_every_registered_attack_and_no_ensemble():
    params = parse_params({"attack": {"methods": list(ATTACKS), "ensemble": [],
                                      "max_images": 500}})
    assert params.attack.methods == tuple(ATTACKS) and params.attack.ensemble == ()
    assert params.attack.max_images == 500
