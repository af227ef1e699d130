import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import run_stage_script

from advlab.core.errors import InputError
from advlab.data.images import ImageSet
from advlab.data.synthetic import synthetic_images
from advlab.models import (
    ARCHITECTURES,
    ModelConfig,
    build_model,
    format_parameter_table,
    load_model,
    model_config,
    new_model,
    parameter_table,
    save_model,
)
from advlab.params import parse_params
from advlab.params.fields import ParamsError
from advlab.params.train import MODELS, Train

CIFAR = ModelConfig("lab_cnn", 3, 32, 10, (0.5, 0.4, 0.3), (0.25, 0.25, 0.25))
FASHION = ModelConfig("lab_cnn", 1, 28, 10, (0.3,), (0.35,))


def test_logits_and_probabilities():
    model = build_model(CIFAR).eval()
    x = torch.rand(4, 3, 32, 32)
    logits = model(x)
    assert logits.shape == (4, 10)
    probs = model.predict_proba(x)
    assert torch.allclose(probs.sum(1), torch.ones(4)) and (probs >= 0).all()
    assert torch.allclose(probs, torch.softmax(logits, 1))


def test_lab_requirements_and_table_1_3_count():
    for config in (CIFAR, FASHION):
        model = build_model(config)
        convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        assert len(convs) >= 3 and len(linears) == 2
        assert any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())
        rows = parameter_table(model)  # raises if the formulas disagree with PyTorch
        total = sum(r[2] for r in rows)
        assert total == sum(p.numel() for p in model.parameters()) and total >= 50_000
        assert "(3·3²+1)·32" in format_parameter_table(rows) or config is FASHION


def test_normalization_is_the_first_layer():
    model = build_model(CIFAR).eval()
    first = model.layers[0]
    x = torch.rand(2, 3, 32, 32)
    expected = (x - torch.tensor(CIFAR.mean).view(1, 3, 1, 1)) / 0.25
    assert torch.allclose(first(x), expected)


def test_saved_model_reloads_with_weights_only(tmp_path):
    torch.manual_seed(0)
    model = build_model(FASHION).eval()
    save_model(tmp_path / "m.pt", model)
    blob = torch.load(tmp_path / "m.pt", weights_only=True)
    assert set(blob) == {"config", "state_dict"}
    again = load_model(tmp_path / "m.pt")
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(model(x), again(x))


# ---- every architecture of the registry --------------------------------------------------------

SMALL = {  # train options that keep each model small enough for a CPU test
    "lab_cnn": {},
    "preact_resnet18": {},
    "wide_resnet": {"depth": 10, "width": 1},
    "fast_cnn": {"widths": (8, 16, 16)},
}
SHAPES = [(3, 32), (1, 28)]  # CIFAR-10, Fashion-MNIST


def images(n: int, channels: int, size: int, seed: int = 0) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    return ImageSet(torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8,
                                  generator=g),
                    torch.arange(n) % 10, tuple(f"c{i}" for i in range(10)))


def test_the_registry_names_every_model_params_allows():
    assert tuple(ARCHITECTURES) == MODELS == tuple(SMALL)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}x{s[1]}")
@pytest.mark.parametrize("arch", SMALL)
def test_model_builds_runs_counts_and_reloads(tmp_path, arch, shape):
    """Logits and probabilities on CIFAR and Fashion-MNIST shapes, the Table 1.3 count equal to
    PyTorch's, and the saved file (weights_only) rebuilding the same function."""
    channels, size = shape
    data = images(24, channels, size)
    torch.manual_seed(0)
    model = new_model(Train(model=arch, **SMALL[arch]), data).eval()
    assert model.config.arch == arch and model.config.in_channels == channels
    x = torch.rand(3, channels, size, size)
    logits = model(x)
    assert logits.shape == (3, 10) and torch.isfinite(logits).all()
    assert torch.allclose(model.predict_proba(x), torch.softmax(logits, 1))
    rows = parameter_table(model)
    assert sum(r[2] for r in rows) == sum(p.numel() for p in model.parameters())
    assert format_parameter_table(rows).splitlines()[-1].startswith("total")

    save_model(tmp_path / "m.pt", model)
    blob = torch.load(tmp_path / "m.pt", weights_only=True)
    assert blob["config"]["options"] == model.config.options
    again = load_model(tmp_path / "m.pt")
    assert torch.equal(model(x), again(x))


@pytest.mark.parametrize(("train", "total"), [
    (Train(model="wide_resnet", depth=28, width=10), 36_479_194),  # RobustBench's WRN-28-10
    (Train(model="wide_resnet", depth=34, width=10), 46_160_474),  # and WRN-34-10
    (Train(model="preact_resnet18"), 11_172_170),  # 11,171,146 of He et al.'s + the final BN
    (Train(model="fast_cnn"), 1_972_792),  # airbench94's widths: "~2M parameters"
], ids=["wrn-28-10", "wrn-34-10", "preact_resnet18", "fast_cnn"])
def test_published_sizes_by_table_1_3(train, total):
    """Built on the meta device: the shapes without the memory or the init's time."""
    config = model_config(train.model, images(2, 3, 32), train)
    with torch.device("meta"):
        model = build_model(config)
    assert sum(r[2] for r in parameter_table(model)) == total


def test_table_without_biases_and_non_affine_batchnorm():
    """Bias-free convs and linears have no +1; a BatchNorm without affine has no row. (The
    lab's formulas alone, with a +1 everywhere, disagree with PyTorch here and raise.)"""
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, bias=False), torch.nn.BatchNorm2d(8),
        torch.nn.BatchNorm2d(8, affine=False), torch.nn.Conv2d(8, 4, (1, 3), groups=2),
        torch.nn.Flatten(), torch.nn.Linear(4, 2, bias=False))
    rows = parameter_table(model)
    assert [(f, c) for _, f, c in rows] == [
        ("3·3²·8", 216), ("2·8", 16), ("(4·1·3+1)·4", 52), ("4·2", 8)]
    assert sum(r[2] for r in rows) == sum(p.numel() for p in model.parameters())


def test_fast_cnn_whitening_decorrelates_the_training_patches_and_is_frozen():
    data = synthetic_images(200, seed=3)
    model = new_model(Train(model="fast_cnn", widths=(8,)), data)
    assert not model.whiten.weight.requires_grad and model.whiten.bias.requires_grad
    assert "(weight frozen)" in parameter_table(model)[0][0]
    with torch.no_grad():
        x = model.normalize(data.images.float() / 255)
        out = F.conv2d(x, model.whiten.weight[:12])  # the half before the negated copies
    flat = out.transpose(0, 1).reshape(12, -1).double()
    covariance = flat @ flat.T / flat.shape[1]
    assert torch.allclose(covariance, torch.eye(12, dtype=torch.float64), atol=0.05)
    assert torch.equal(model.whiten.weight[12:], -model.whiten.weight[:12])

    learned = new_model(Train(model="fast_cnn", widths=(8,), whiten=False), data)
    assert learned.whiten.weight.requires_grad


def test_bad_model_options_name_their_key():
    with pytest.raises(ParamsError, match=r"train\.depth = 12 .*6n \+ 4"):
        parse_params({"train": {"model": "wide_resnet", "depth": 12}})
    with pytest.raises(InputError, match=r"train\.widths: 5 blocks .*28x28"):
        new_model(Train(model="fast_cnn", widths=(4,) * 5), images(2, 1, 28))


@pytest.mark.parametrize("arch", ["preact_resnet18", "wide_resnet", "fast_cnn"])
def test_train_stage_trains_and_saves_each_new_model(tmp_path, monkeypatch, capsys, arch):
    """The train stage in process on tiny Fashion-MNIST-shaped splits: it prints the table,
    writes model.params and a model file that rebuilds the architecture with its options."""
    splits = tmp_path / "data/splits"
    splits.mkdir(parents=True)
    images(32, 1, 28, seed=1).save(splits / "train.pt")
    images(16, 1, 28, seed=2).save(splits / "val.pt")
    train = {"model": arch, "epochs": 1, "batch_size": 16, **{
        k: list(v) if isinstance(v, tuple) else v for k, v in SMALL[arch].items()}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(
        {"base": {"device": "cpu"}, "train": train, "evaluate": {"batch_size": 16}}))
    monkeypatch.chdir(tmp_path)
    run_stage_script(monkeypatch, "train.py", "--splits", "data/splits", "--model",
                     "models/model.pt", "--metrics", "metrics", "--tensorboard", "runs/train",
                     "--checkpoint", "checkpoints/train.pt")
    model = load_model("models/model.pt")
    assert model.config.arch == arch and model.config.in_channels == 1
    params = sum(p.numel() for p in model.parameters())
    assert json.loads(Path("metrics/train.json").read_text())["model"]["params"] == params
    assert f"= {params:>9,}" in capsys.readouterr().out

