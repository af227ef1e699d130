"""FAB-T: its L-infinity projection is the least move onto the plane inside the box, and the
attack fools a small trained model at a large eps, stays in the eps-ball and in [0, 1],
goes towards its target classes, and steps as the reference FAB steps."""

from __future__ import annotations

import pytest
import torch
from pyautoattack.fab_pt import FABAttack_PT

from advlab.attacks import fab
from advlab.attacks.fab import fab_t, linf_to_hyperplane
from advlab.attacks.registry import ATTACKS
from advlab.data.images import to_float
from advlab.params import parse_params
from advlab.params.attack import FabT


def _change_at(radius: torch.Tensor, room: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return (weight * torch.minimum(room, radius[:, None])).sum(1)


def test_projection_is_the_least_linf_move_onto_the_plane_inside_the_box():
    generator = torch.Generator().manual_seed(0)
    t = torch.rand(64, 50, generator=generator)
    t[:, :5] = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.5])  # saturated pixels: no room one way
    w = torch.randn(64, 50, generator=generator)
    w[:, 10] = 0  # a zero weight never moves
    excess = torch.randn(64, generator=generator) * 20  # some planes out of the box's reach
    d = linf_to_hyperplane(t, w, excess)
    assert ((t + d) >= 0).all() and ((t + d) <= 1).all()
    assert (d[:, 10] == 0).all()
    reached = ((w * d).sum(1) + excess).abs() < 1e-4
    direction = torch.where(w * excess.sign()[:, None] < 0, 1.0, -1.0)
    room, weight = torch.where(direction > 0, 1 - t, t), w.abs()
    reachable = _change_at(torch.ones(64), room, weight) >= excess.abs()
    assert reachable.any() and (~reachable).any()
    assert reached[reachable].all(), "a reachable plane is reached"
    # least: bisection on the radius gives the same L-infinity norm
    low, high = torch.zeros(64), torch.ones(64)
    for _ in range(40):
        mid = (low + high) / 2
        enough = _change_at(mid, room, weight) >= excess.abs()
        low, high = torch.where(enough, low, mid), torch.where(enough, mid, high)
    norm = d.abs().amax(1)
    assert torch.allclose(norm[reachable], high[reachable], atol=1e-4)
    # out of reach: every coordinate with a weight goes all the way to its bound
    far = ~reachable
    assert torch.allclose(d[far].abs(), (room * (w != 0))[far], atol=1e-6)


@pytest.fixture(scope="module")
def correct(trained_model, tiny_sets):
    """Of the first 60 test images, those the model classifies correctly (45)."""
    x, y = to_float(tiny_sets["test"].images[:60]), tiny_sets["test"].labels[:60]
    with torch.no_grad():
        ok = trained_model(x).argmax(1) == y
    return trained_model, x[ok], y[ok]


def test_fab_t_fools_a_small_model_at_a_large_eps_inside_the_ball(correct):
    model, x, y = correct
    for eps, share in ((0.1, 0.9), (0.005, 0.0)):
        x_adv = fab_t(model, x, y, eps, FabT(steps=20, targets=3), None).x
        assert x_adv.min() >= 0 and x_adv.max() <= 1
        assert (x_adv - x).abs().max() <= eps + 1e-6
        with torch.no_grad():
            fooled = model(x_adv).argmax(1) != y
        assert fooled.float().mean() >= share, (eps, fooled.float().mean())
        assert torch.equal(x_adv[~fooled], x[~fooled]), "no fooling point: the clean image"
    assert not fooled.all(), "at eps 0.005 some images stand"


def test_fab_t_goes_towards_its_targets(correct):
    model, x, y = correct
    with torch.no_grad():
        ranked = model(x).argsort(1, descending=True)
    eps = 0.1
    one = fab_t(model, x, y, eps, FabT(steps=20, targets=1), None).x
    with torch.no_grad():
        predicted = model(one).argmax(1)
    fooled = predicted != y
    assert fooled.sum() >= len(y) // 2
    on_target = predicted[fooled] == ranked[fooled, 1]
    assert on_target.float().mean() >= 0.9, "one target: the fooled land on it"
    # the next target instead: the same images land elsewhere
    towards_third = FabT(steps=20, targets=2)
    both = fab_t(model, x, y, eps, towards_third, None).x
    with torch.no_grad():
        fooled_both = model(both).argmax(1) != y
    assert fooled_both.sum() >= fooled.sum() - 1, "more targets fool at least as many"


def test_judging_with_the_gradient_pass_or_apart_gives_the_same_attack(correct, monkeypatch):
    """FAB-T may judge an iterate with its gradient pass (then redo the gradient where it pulls
    a row back) or with a forward pass of its own: a matter of cost, never of result."""
    model, x, y = correct
    settings = FabT(steps=20, targets=3)
    runs = []
    for cost in (0.0, 1.0):  # 0: judge apart from the first pull-back on; 1: always fused
        monkeypatch.setattr(fab, "FORWARD_COST", cost)
        runs.append(fab_t(model, x[:40], y[:40], 0.02, settings, None))
    (apart, fused) = runs
    assert torch.allclose(apart.x, fused.x, atol=1e-6)
    assert torch.equal(apart.logits.argmax(1), fused.logits.argmax(1))
    assert (apart.logits.argmax(1) != y[:40]).any(), "something to compare: some images fooled"


def test_fab_t_takes_the_reference_fabs_first_step(linear_classifier):
    """From the clean image, one step of the default FAB-T lands where the reference's
    (fab_base.py, its targeted attack_single_run) lands: past the linearized boundary by its
    overshoot eta, which on a linear model fools every image; without eta the step would stop
    on the boundary."""
    model, x, y = linear_classifier
    settings = FabT(steps=1, targets=1)  # alpha_max, eta, beta: AutoAttack's
    ours = fab_t(model, x, y, 1.0, settings, None)
    ref = FABAttack_PT(model, n_iter=1, alpha_max=settings.alpha_max, eta=settings.eta,
                       beta=settings.beta)
    ref.target_class = 2  # the second highest clean logit: target 1 of ours
    theirs = ref.attack_single_run(x, y, use_rand_start=False, is_targeted=True)
    assert (ours.logits.argmax(1) != y).all()
    assert torch.allclose(ours.x, theirs, atol=1e-6), (ours.x - theirs).abs().max()


def test_fab_t_is_in_the_registry_and_the_default_ensemble():
    assert ATTACKS["fab_t"].section == "fab_t" and ATTACKS["fab_t"].run is fab_t
    attack = parse_params({}).attack
    assert attack.ensemble == ("apgd_ce", "apgd_t", "fab_t", "square")
    assert attack.fab_t == FabT(steps=100, targets=9, alpha_max=0.1, eta=1.05, beta=0.9)
