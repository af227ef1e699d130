"""base.precision: the autocast dtype picked per device, bf16 on the CPU through the same path as
CUDA, fp32 logits and attack gradients, TF32 through torch's fp32_precision API."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import train_tiny

import advlab.core.device
from advlab.attacks.fgsm import fgsm_gradient_sign
from advlab.core.device import (
    gradient_scaler,
    no_tf32,
    pick_precision,
    prepare_model,
    reproducible_cudnn,
    set_tf32,
)
from advlab.data.images import to_float
from advlab.evaluation.classification import classification_report, predict_logits
from advlab.evaluation.robustness import fgsm_sweep
from advlab.models import build_model, model_config
from advlab.params import parse_params
from advlab.params.fields import ParamsError
from advlab.params.train import Train
from advlab.training.loop import FitJob, fit

CPU = torch.device("cpu")


def card(monkeypatch, capability: tuple[int, int]) -> torch.device:
    monkeypatch.setattr(advlab.core.device, "cuda_capability", lambda device: capability)
    return torch.device("cuda")


@pytest.mark.parametrize("capability, dtype", [((9, 0), torch.bfloat16), ((8, 0), torch.bfloat16),
                                               ((7, 5), torch.float16), ((6, 1), torch.float16)])
def test_auto_is_bf16_from_ampere_on_and_fp16_before(monkeypatch, capability, dtype):
    assert pick_precision("auto", card(monkeypatch, capability)) == dtype


def test_auto_is_fp32_off_cuda_and_explicit_names_are_kept():
    assert pick_precision("auto", CPU) == torch.float32
    assert pick_precision("auto", torch.device("mps")) == torch.float32
    assert pick_precision("bf16", CPU) == torch.bfloat16
    assert pick_precision("fp16", CPU) == torch.float16
    assert pick_precision("fp32", torch.device("cuda")) == torch.float32


def test_unknown_precision_is_a_params_error():
    with pytest.raises(ParamsError, match="base.precision = 'half' is not allowed; expected "
                                          "auto | fp32 | bf16 | fp16"):
        parse_params({"base": {"precision": "half"}})


def test_no_tf32_uses_the_fp32_precision_api_and_restores_it():
    saved = torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision
    try:
        set_tf32("tf32")  # what pick_device does on CUDA; a legacy allow_tf32 read now raises
        with no_tf32():
            assert torch.backends.cuda.matmul.fp32_precision == "ieee"
            assert torch.backends.cudnn.conv.fp32_precision == "ieee"
        assert torch.backends.cuda.matmul.fp32_precision == "tf32"
        assert torch.backends.cudnn.conv.fp32_precision == "tf32"
    finally:
        torch.backends.cuda.matmul.fp32_precision = saved[0]
        torch.backends.cudnn.conv.fp32_precision = saved[1]


def test_evaluation_turns_cudnn_autotuning_off_and_restores_it(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    with reproducible_cudnn():
        assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
    assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic


def bf16_copy(model: torch.nn.Module) -> torch.nn.Module:
    return prepare_model(copy.deepcopy(model), CPU, torch.bfloat16)


def test_bf16_evaluation_returns_fp32_logits_from_an_fp32_last_layer(tiny_sets):
    torch.manual_seed(0)
    untrained = build_model(model_config("lab_cnn", tiny_sets["train"]))
    images = tiny_sets["test"].images
    logits = predict_logits(bf16_copy(untrained), images, 64)
    assert logits.dtype == torch.float32
    assert (logits != logits.bfloat16().float()).float().mean() > 0.9  # not on bf16's grid
    top2 = logits.topk(2, dim=1).values
    assert (top2[:, 0] > top2[:, 1]).all()  # no ties for argmax to break by class index
    fp32 = predict_logits(untrained, images, 64)
    assert not torch.equal(logits, fp32)  # the body did run in bf16 ...
    assert torch.allclose(logits, fp32, atol=0.1)  # ... with bf16's rounding only


def test_bf16_attack_gradient_is_fp32_and_eps_0_is_the_test_accuracy(trained_model, tiny_sets):
    model, data = bf16_copy(trained_model), tiny_sets["test"]
    x, y = to_float(data.images[:64]), data.labels[:64]
    assert torch.equal(fgsm_gradient_sign(model, x, y),
                       fgsm_gradient_sign(prepare_model(copy.deepcopy(trained_model), CPU), x, y))
    report = classification_report(model, data, 64)
    result = fgsm_sweep(model, data, (0.0, 0.1), 64)
    assert result.accuracy[0] == report["accuracy"]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_training_runs_through_cpu_autocast(tiny_sets, dtype):
    # 4 steps: fp16 convolutions are slow on the CPU (about 4 s a step of 32 images)
    sets = {"train": tiny_sets["train"].subset(torch.arange(128)),
            "val": tiny_sets["val"].subset(torch.arange(32))}
    _, fp32 = train_tiny(sets, epochs=1)
    cfg = Train(epochs=1, batch_size=32)  # as train_tiny, with the model in `dtype`
    torch.manual_seed(0)
    model = prepare_model(build_model(model_config("lab_cnn", sets["train"])), CPU, dtype)
    assert gradient_scaler(model, CPU).is_enabled() == (dtype == torch.float16)
    history = fit(FitJob(model, sets["train"], sets["val"], cfg, 0, 128))
    losses, reference = history[0].step_losses, fp32[0].step_losses
    assert torch.isfinite(losses).all()
    assert not torch.equal(losses, reference)  # autocast was on
    assert abs(losses.mean() - reference.mean()) < 0.1 * reference.mean()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_device_turns_on_autotuning_and_tf32():
    saved = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.fp32_precision,
             torch.backends.cudnn.conv.fp32_precision)
    try:
        device = advlab.core.device.pick_device("cuda")
        assert torch.backends.cudnn.benchmark
        assert torch.backends.cuda.matmul.fp32_precision == "tf32"
        assert torch.backends.cudnn.conv.fp32_precision == "tf32"
        native_bf16 = torch.cuda.get_device_capability(device) >= (8, 0)
        assert pick_precision("auto", device) == (torch.bfloat16 if native_bf16 else torch.float16)
    finally:
        torch.backends.cudnn.benchmark = saved[0]
        torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = \
            saved[1:]
