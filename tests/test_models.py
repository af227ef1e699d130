import torch

from advlab.models import (
    ModelConfig,
    build_model,
    format_parameter_table,
    load_model,
    parameter_table,
    save_model,
)

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
