"""evaluate.batch_size: auto (the default) resolves per device type; explicit sizes are kept."""

import torch

from advlab.evaluation.classification import AUTO_BATCH, evaluation_batch_size, predict_logits
from advlab.params import Params, parse_params


def test_auto_is_the_default_and_resolves_per_device_type():
    assert Params().evaluate.batch_size == "auto"
    assert evaluation_batch_size("auto", torch.device("cpu")) == AUTO_BATCH["cpu"] == 128
    assert evaluation_batch_size("auto", torch.device("cuda")) == AUTO_BATCH["cuda"] == 1000


def test_explicit_sizes_are_kept():
    params = parse_params({"evaluate": {"batch_size": 1000}})
    assert evaluation_batch_size(params.evaluate.batch_size, torch.device("cpu")) == 1000
    assert evaluation_batch_size(7, torch.device("cuda")) == 7


def test_auto_predicts_what_an_explicit_size_does(trained_model, tiny_sets):
    images = tiny_sets["test"].images
    auto = predict_logits(trained_model, images, evaluation_batch_size("auto", images.device))
    assert torch.equal(auto.argmax(1), predict_logits(trained_model, images, 1000).argmax(1))
