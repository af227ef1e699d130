"""prepare_model's channels_last layout (CUDA and CPU) changes speed, not results."""

import copy

import torch
from conftest import train_tiny

from advlab.core.device import pick_device, prepare_model
from advlab.evaluation.classification import predict_logits
from advlab.models import build_model, model_config
from advlab.params.train import Train
from advlab.training.loop import FitJob, fit


def prepared_copy(model: torch.nn.Module) -> torch.nn.Module:
    return prepare_model(copy.deepcopy(model), pick_device("cpu"))


def test_prepared_model_is_channels_last_and_predicts_the_same(trained_model, tiny_sets):
    prepared = prepared_copy(trained_model)
    conv = prepared.layers[1].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    images = tiny_sets["test"].images
    plain, fast = predict_logits(trained_model, images, 64), predict_logits(prepared, images, 64)
    assert torch.equal(plain.argmax(1), fast.argmax(1))
    assert torch.allclose(plain, fast, atol=1e-5)


def test_prepared_model_batched_equals_one_image_at_a_time(trained_model, tiny_sets):
    prepared = prepared_copy(trained_model)
    images = tiny_sets["test"].images[:40]
    batched = predict_logits(prepared, images, batch_size=1000)
    single = torch.cat([predict_logits(prepared, images[i : i + 1], 1) for i in range(40)])
    assert torch.equal(batched.argmax(1), single.argmax(1))
    assert torch.allclose(batched, single, atol=1e-5)


def prepared_run(sets, seed: int) -> list:
    cfg = Train(epochs=1, batch_size=32)
    torch.manual_seed(seed)
    model = prepare_model(build_model(model_config("lab_cnn", sets["train"])), pick_device("cpu"))
    return fit(FitJob(model, sets["train"], sets["val"], cfg, seed, 128))


def test_prepared_training_reruns_identically_and_matches_plain(tiny_sets):
    first, second = prepared_run(tiny_sets, seed=3), prepared_run(tiny_sets, seed=3)
    assert torch.equal(first[0].step_losses, second[0].step_losses)
    assert first[0].val_acc == second[0].val_acc
    _, plain = train_tiny(tiny_sets, epochs=1, seed=3)
    fast, slow = first[0].step_losses, plain[0].step_losses
    assert torch.allclose(fast[0], slow[0], atol=1e-5)  # same weights, same batch: rounding only
    assert torch.allclose(fast, slow, rtol=1e-2)  # rounding grows over Adam steps, no drift
