"""PGD and adversarial training: PGD generalizes FGSM exactly, is at least as strong, stays in
the eps-ball; the training attacks keep the model untouched; a library cross-check."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from advlab.attacks.core import uniform_start
from advlab.attacks.fgsm import fgsm_gradient_sign, perturb
from advlab.attacks.pgd import pgd
from advlab.attacks.training import adversarial_batch
from advlab.data.images import ImageSet, to_float
from advlab.data.synthetic import synthetic_images
from advlab.evaluation.attack_metrics import save_metrics
from advlab.evaluation.robustness import fgsm_sweep, sweep
from advlab.models import ModelConfig, build_model
from advlab.params import parse_params
from advlab.params.attack import Pgd
from advlab.params.fields import ParamsError
from advlab.params.train import Train
from advlab.reporting.report import attack_rows, read_csv

EPSILONS = (0.0, 0.03, 0.1)


@pytest.fixture(scope="module")
def small(trained_model, tiny_sets) -> tuple[torch.nn.Module, ImageSet]:
    """The shared tiny trained model and 100 of its test images."""
    return trained_model, tiny_sets["test"].subset(torch.arange(100))


def test_pgd_with_one_step_no_random_start_and_step_eps_is_fgsm_exactly(small):
    model, test_set = small
    x, y = to_float(test_set.images[:50]), test_set.labels[:50]
    grad_sign = fgsm_gradient_sign(model, x, y)
    for eps in (0.01, 0.1, 0.5):
        assert torch.equal(pgd(model, x, y, eps, steps=1, step_size=eps),
                           perturb(x, grad_sign, eps)), f"eps {eps}"
    for eps in EPSILONS[1:]:  # one eps per sweep: PGD carries images fooled at a smaller eps
        fgsm = fgsm_sweep(model, test_set, (0.0, eps), batch_size=40)
        as_pgd = sweep(model, test_set, (0.0, eps), 40, "pgd",
                       Pgd(steps=1, step_scale=1.0, random_start=False))
        assert torch.equal(as_pgd.correct, fgsm.correct)
        clean_ok = fgsm.robust[0]  # PGD leaves images wrong on clean input unattacked; FGSM not
        assert torch.equal(as_pgd.predictions[:, clean_ok], fgsm.predictions[:, clean_ok])
        assert clean_ok[0], "test image 0 is attacked by both"
        assert torch.equal(as_pgd.example_images, fgsm.example_images)


def test_pgd_is_never_weaker_than_fgsm_beyond_noise(small):
    model, test_set = small
    fgsm = fgsm_sweep(model, test_set, EPSILONS, batch_size=100)
    strong = sweep(model, test_set, EPSILONS, 100, "pgd", Pgd(steps=10), seed=1)
    noise = 2  # images: a random start may save the odd one FGSM's exact gradient finds
    assert (strong.correct <= fgsm.correct + noise).all(), (strong.accuracy, fgsm.accuracy)
    assert strong.correct[0] == fgsm.correct[0], "eps 0 is the clean accuracy for both"
    assert strong.correct[-1] < strong.correct[0], "eps 0.1 hurts a barely trained model"


def test_pgd_stays_in_the_eps_ball_and_the_pixel_range(small):
    model, test_set = small
    x, y = to_float(test_set.images[:30]), test_set.labels[:30]
    start = uniform_start(x, torch.Generator().manual_seed(0))
    assert start.min() >= -1 and start.max() <= 1
    for eps in (0.02, 0.3):
        x_adv = pgd(model, x, y, eps, steps=3, step_size=eps / 2, start=start)
        assert x_adv.min() >= 0 and x_adv.max() <= 1
        assert (x_adv - x).abs().max() <= eps + 1e-6
        assert not torch.equal(x_adv, x)
    assert pgd(model, x, y, 0.0, steps=3, step_size=0.1, start=start) is x


def test_pgd_sweep_is_reproducible_and_exact_at_eps_zero(small):
    model, test_set = small
    first = sweep(model, test_set, EPSILONS, 64, "pgd", Pgd(steps=2), seed=3)
    again = sweep(model, test_set, EPSILONS, 64, "pgd", Pgd(steps=2), seed=3)
    assert torch.equal(first.correct, again.correct)
    assert torch.equal(first.example_images, again.example_images)
    assert first.flipped[0] == 0
    assert torch.equal(first.example_images[0], to_float(test_set.images[0]))


@pytest.mark.parametrize("mode", ["fgsm_rs", "pgd"])
def test_training_attack_stays_in_the_ball_and_leaves_the_model_as_it_was(small, mode):
    model, test_set = small
    x, y = to_float(test_set.images[:16]), test_set.labels[:16]
    cfg = Train(adversarial=mode, adv_eps=0.05, adv_steps=2)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    model.train()  # as in train_epoch
    try:
        torch.manual_seed(0)
        x_adv = adversarial_batch(model, x, y, cfg)
        assert model.training
    finally:
        model.eval()
    assert not x_adv.requires_grad
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x).abs().max() <= 0.05 + 1e-6
    assert not torch.equal(x_adv, x)
    for key, value in model.state_dict().items():  # BatchNorm statistics included
        assert torch.equal(value, state[key]), f"{key} changed"
    for p, g in zip(model.parameters(), grads, strict=True):
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)


def test_no_adversarial_training_returns_the_batch_itself(small):
    model, test_set = small
    x = to_float(test_set.images[:4])
    assert adversarial_batch(model, x, test_set.labels[:4], Train()) is x


def test_attack_csv_has_a_row_per_method_and_eps_and_reads_back_grouped(small, tmp_path):
    model, test_set = small
    results = [fgsm_sweep(model, test_set, EPSILONS, 100),
               sweep(model, test_set, EPSILONS, 100, "pgd", Pgd(steps=1))]
    save_metrics(tmp_path, results)
    lines = (tmp_path / "attack.csv").read_text().splitlines()
    assert lines[0] == "method,epsilon,accuracy,mean_confidence,flipped"
    assert [line.split(",")[0] for line in lines[1:]] == ["fgsm"] * 3 + ["pgd"] * 3
    grouped = attack_rows(read_csv(tmp_path / "attack.csv"))
    assert list(grouped) == ["fgsm", "pgd"]
    for result in results:
        assert [r["epsilon"] for r in grouped[result.method]] == list(EPSILONS)
        assert [r["accuracy"] for r in grouped[result.method]] == pytest.approx(
            result.accuracy, abs=1e-6)


@pytest.mark.parametrize("raw, key", [
    ({"attack": {"methods": ["fgsm", "cw"]}}, "attack.methods"),
    ({"attack": {"methods": []}}, "attack.methods"),
    ({"attack": {"methods": ["pgd", "pgd"]}}, "attack.methods"),
    ({"attack": {"pgd": {"steps": 0}}}, "attack.pgd.steps"),
    ({"attack": {"pgd": {"step_scale": -1}}}, "attack.pgd.step_scale"),
    ({"attack": {"pgd": {"restarts": 2}}}, "attack.pgd.restarts"),
    ({"train": {"adversarial": "free"}}, "train.adversarial"),
    ({"train": {"adv_eps": 2}}, "train.adv_eps"),
])
def test_params_reject_unknown_methods_and_bad_attack_settings(raw, key):
    with pytest.raises(ParamsError, match=key.replace(".", r"\.")):
        parse_params(raw)


def test_params_read_nested_pgd_settings():
    params = parse_params({"attack": {"methods": ["fgsm", "pgd"], "pgd": {"steps": 20}},
                           "train": {"adversarial": "fgsm_rs", "adv_eps": 0.1}})
    assert params.attack.pgd == Pgd(steps=20, step_scale=2.5, random_start=True)
    assert params.train.adversarial == "fgsm_rs" and params.train.adv_eps == 0.1


def test_fgsm_and_pgd_predict_as_torchattacks_does(small):
    """Same model, data, eps and steps, no random start: identical adversarial predictions.

    (torchattacks averages the loss over the batch where we sum it: the sign of the gradient,
    hence the images, are the same up to rounding.)"""
    torchattacks = pytest.importorskip("torchattacks")
    model, test_set = small
    x, y = to_float(test_set.images), test_set.labels
    for eps in (0.03, 0.1):
        steps, alpha = 5, 2.5 * eps / 5
        ours = {"fgsm": perturb(x, fgsm_gradient_sign(model, x, y), eps),
                "pgd": pgd(model, x, y, eps, steps, alpha)}
        theirs = {"fgsm": torchattacks.FGSM(model, eps=eps)(x, y),
                  "pgd": torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps,
                                          random_start=False)(x, y)}
        for method in ours:
            torch.testing.assert_close(ours[method], theirs[method], rtol=0, atol=1e-6)
            with torch.no_grad():
                assert torch.equal(model(ours[method]).argmax(1),
                                   model(theirs[method]).argmax(1)), f"{method} eps {eps}"


@pytest.mark.slow
@pytest.mark.parametrize("methods", [("fgsm",), ("fgsm", "pgd")])
def test_dvc_plots_draw_a_line_per_method_whichever_methods_ran(tmp_path, methods):
    """dvc.yaml's attack plots (template .dvc/plots/by_method.json) on the attack.csv the
    stage writes: no plot errors, and every method's rows reach the chart."""
    root = Path(__file__).resolve().parents[1]
    big = synthetic_images(20, seed=3)
    test_set = ImageSet(big.images[:, :, ::2, ::2].contiguous(), big.labels, big.classes)
    torch.manual_seed(0)
    model = build_model(ModelConfig("lab_cnn", 3, 16, 10, (0.3,) * 3, (0.2,) * 3)).eval()
    save_metrics(tmp_path / "metrics",
                 [sweep(model, test_set, EPSILONS, 20, m, Pgd(steps=1)) for m in methods])
    plots = [p for p in yaml.safe_load((root / "dvc.yaml").read_text())["plots"]
             if isinstance(p, dict) and "metrics/attack.csv" in json.dumps(p)]
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"plots": plots}))
    run = [sys.executable, "-m", "dvc"]
    subprocess.run([*run, "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    (tmp_path / ".dvc" / "plots").mkdir(exist_ok=True)
    shutil.copy(root / ".dvc" / "plots" / "by_method.json", tmp_path / ".dvc" / "plots")
    shown = json.loads(subprocess.run([*run, "plots", "show", "--json"], cwd=tmp_path,
                                      check=True, capture_output=True, text=True).stdout)
    assert not shown.get("errors")
    assert len(shown["data"]) == len(plots) == 2
    for charts in shown["data"].values():
        (chart,) = charts
        rows = chart["content"]["data"]["values"]
        assert [r["method"] for r in rows] == [m for m in methods for _ in EPSILONS]
        assert chart["content"]["encoding"]["strokeDash"]["field"] == "method"
