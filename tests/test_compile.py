"""train.compile: the training step through torch.compile (inductor) computes what eager does.

The model is fast_cnn with one 4-channel block on 8x8 images: compiling costs about the same
for any input size but grows with the graph, and this is the smallest graph that still has a
conv, BatchNorm (train-mode statistics), GELU, pooling and a linear layer. No dropout: compiled
code draws other random numbers than eager, so lab_cnn's outputs could not be compared.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch._dynamo.utils import counters
from tqdm import tqdm

from advlab.data.images import ImageSet
from advlab.models import new_model
from advlab.params.train import Train
from advlab.training.distributed import SINGLE, unwrap, wrap
from advlab.training.loop import FitJob, train_epoch


@pytest.mark.slow  # inductor's C++ compile: about 20 s of CPU, a minute on 2 busy cores
def test_compiled_training_matches_eager():
    g = torch.Generator().manual_seed(0)
    data = ImageSet(torch.randint(0, 256, (32, 3, 8, 8), dtype=torch.uint8, generator=g),
                    torch.arange(32) % 10, tuple(f"c{i}" for i in range(10)))
    cfg = Train(model="fast_cnn", widths=(4,), batch_size=16)
    torch.manual_seed(0)
    eager = new_model(cfg, data)
    compiled = wrap(copy.deepcopy(eager), SINGLE, torch.device("cpu"), compile=True)
    assert unwrap(compiled) is not eager and list(unwrap(compiled).state_dict()) == list(
        eager.state_dict())  # checkpoints and model files keep their keys
    counters.clear()
    losses = []
    for model in (eager, compiled):
        with tqdm(total=2, disable=True) as bar:
            losses.append(train_epoch(FitJob(model, data, data, cfg, 0, 16), 0, bar))
    assert counters["stats"]["unique_graphs"] >= 1  # the step ran through a compiled graph
    assert torch.allclose(losses[0], losses[1], rtol=1e-4, atol=1e-5)
    trained = unwrap(compiled).state_dict()
    for name, value in eager.state_dict().items():
        assert torch.allclose(value.float(), trained[name].float(), rtol=1e-4, atol=1e-5), name
