"""FGSM: the batched sweep against a plain one-image-at-a-time implementation of the formula."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advlab.attacks.fgsm import fgsm_gradient_sign, perturb
from advlab.core.device import pick_device, pick_precision, prepare_model
from advlab.data.images import ImageSet, to_float
from advlab.data.synthetic import synthetic_images
from advlab.evaluation.attack_metrics import summary
from advlab.evaluation.classification import classification_report, predict_logits
from advlab.evaluation.robustness import fgsm_sweep
from advlab.models import LabCNN, build_model, model_config
from advlab.params import parse_params
from advlab.params.fields import ParamsError
from advlab.params.train import Train
from advlab.training.loop import FitJob, fit

EPSILONS = (0.0, 0.03, 0.1, 0.3)


def downsample(images: ImageSet) -> ImageSet:
    """16x16 versions of the generated 32x32 images: a 4x cheaper model, same task."""
    return ImageSet(images.images[:, :, ::2, ::2].contiguous(), images.labels, images.classes)


@pytest.fixture(scope="module")
def small() -> tuple[LabCNN, ImageSet]:
    """A LabCNN trained for a few steps on 16x16 generated images, and 120 test images."""
    sets = [downsample(synthetic_images(n, seed=seed)) for n, seed in ((320, 1), (120, 2))]
    train_set, test_set = sets
    cfg = Train(epochs=1, batch_size=32)
    torch.manual_seed(0)
    model = build_model(model_config("lab_cnn", train_set))
    fit(FitJob(model, train_set, test_set, cfg, seed=0, eval_batch_size=128))
    return model.eval(), test_set


def fgsm_one_image(model: LabCNN, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """The lab's fgsm_attack for one (1, C, H, W) image, then clamped to [0, 1]."""
    x = x.clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    return (x + eps * x.grad.sign()).clamp(0, 1).detach()


def test_batched_sweep_predicts_as_one_image_at_a_time(small):
    model, test_set = small
    result = fgsm_sweep(model, test_set, EPSILONS, batch_size=50)  # 3 batches, the last short
    x_all, y_all = to_float(test_set.images), test_set.labels
    with torch.no_grad():
        clean = model(x_all).argmax(1)
    for e, eps in enumerate(EPSILONS):
        perturbed = torch.cat([fgsm_one_image(model, x_all[i:i + 1], y_all[i:i + 1], eps)
                               for i in range(len(test_set))])
        with torch.no_grad():
            probs = model(perturbed).softmax(1)
        pred = probs.argmax(1)
        expected_correct = ((clean == y_all) & (pred == y_all)).sum().item()
        assert result.correct[e].item() == expected_correct, f"eps {eps}"
        assert result.flipped[e].item() == (pred != clean).sum().item(), f"eps {eps}"
        # mean_confidence: the predicted class's probability, not the true class's
        assert result.confidence_sum[e].item() == pytest.approx(probs.amax(1).sum().item(),
                                                                rel=1e-5), f"eps {eps}"
        assert result.example_predictions[e].item() == pred[0].item()
        torch.testing.assert_close(result.example_images[e], perturbed[0], rtol=0, atol=1e-6)
    assert result.correct[-1] < result.correct[0], "eps 0.3 should hurt a barely trained model"


def test_eps_zero_is_the_test_accuracy_for_any_batch_size(small):
    model, test_set = small
    clean_correct = (predict_logits(model, test_set.images, 64).argmax(1) == test_set.labels)
    for batch_size in (1, 64, 1000):
        result = fgsm_sweep(model, test_set, (0.0, 0.1), batch_size)
        assert result.correct[0].item() == clean_correct.sum().item()
        assert result.flipped[0] == 0
        torch.testing.assert_close(result.example_images[0], to_float(test_set.images[0]),
                                   rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_eps_zero_is_the_test_stage_accuracy_on_cuda(small):
    """On CUDA predictions run under bf16 autocast; eps = 0 must still match the test stage."""
    model, test_set = small
    device = pick_device("cuda")
    model = prepare_model(copy.deepcopy(model), device, pick_precision("auto", device))
    data = test_set.to(torch.device("cuda"))
    report = classification_report(model, data, batch_size=50)
    result = fgsm_sweep(model, data, (0.0, 0.1), batch_size=50)
    assert result.accuracy[0] == pytest.approx(report["accuracy"], abs=1e-7)


def test_perturbation_is_clamped_and_at_most_eps(small):
    model, test_set = small
    x, y = to_float(test_set.images[:40]), test_set.labels[:40]
    grad_sign = fgsm_gradient_sign(model, x, y)
    assert set(grad_sign.unique().tolist()) <= {-1.0, 0.0, 1.0}
    for eps in (0.05, 0.5, 1.0):
        x_adv = perturb(x, grad_sign, eps)
        assert x_adv.min() >= 0 and x_adv.max() <= 1
        assert (x_adv - x).abs().max() <= eps + 1e-6
        assert (x_adv != x).any()
    assert perturb(x, grad_sign, 0.0) is x


def test_gradient_uses_eval_mode_and_changes_nothing(small):
    model, test_set = small
    x, y = to_float(test_set.images[:8]), test_set.labels[:8]
    expected = fgsm_gradient_sign(model, x, y)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    model.train()  # dropout and batch statistics would change the gradient if left on
    try:
        assert torch.equal(fgsm_gradient_sign(model, x, y), expected)
        assert model.training, "the caller's mode is restored"
    finally:
        model.eval()
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), f"{key} changed"
    for p, g in zip(model.parameters(), grads, strict=True):
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)


def test_summary_names_every_eps(small):
    model, test_set = small
    result = fgsm_sweep(model, test_set, EPSILONS, batch_size=120)
    data = summary([result])
    assert data["methods"] == ["fgsm"]
    assert list(data["fgsm"]["accuracy"]) == ["eps=0", "eps=0.03", "eps=0.1", "eps=0.3"]
    assert data["images"] == len(test_set)
    assert 0 <= data["zero_grad_fraction"] <= 1
    assert all(0 < c <= 1 for c in data["fgsm"]["mean_confidence"].values())


class Wave(nn.Module):
    """Two classes, logits (sin(a * m), 0) with m the mean of channel 0: a big enough step
    overshoots the sine's peak, so FGSM can turn a wrong prediction right."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x[:, 0].mean((1, 2))
        return torch.stack([torch.sin(2 * math.pi / 0.4 * m), torch.zeros_like(m)], 1)


def test_accuracy_counts_only_images_correct_both_clean_and_perturbed():
    # image 0: m = 13/255, sin > 0, predicted 0 (wrong); the attack raises m by 0.2 to where
    #   sin < 0: predicted 1 (right), yet it must not count. image 1: m = 69/255, right clean,
    #   lowered by 0.2: wrong. Channels 1 and 2 do not reach the logits: zero gradient.
    images = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    images[0, 0], images[1, 0] = 13, 69
    data = ImageSet(images, torch.tensor([1, 1]), ("zero", "one"))
    result = fgsm_sweep(Wave(), data, (0.0, 0.2), batch_size=2)
    assert result.correct.tolist() == [1, 0]
    assert result.flipped.tolist() == [0, 2]
    assert result.zero_grad_fraction == pytest.approx(2 / 3)


@pytest.mark.parametrize("epsilons", [[0, 0.1, 0.1], [], [0, 1.5], [-0.1]])
def test_params_reject_epsilons_that_cannot_be_attack_json_keys_or_pixel_steps(epsilons):
    with pytest.raises(ParamsError, match="attack.epsilons"):
        parse_params({"attack": {"epsilons": epsilons}})
