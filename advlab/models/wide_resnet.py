"""wide_resnet: WRN-depth-width of Zagoruyko & Komodakis 2016, as Madry et al., TRADES and
RobustBench use it (WRN-28-10, WRN-34-10; WRN-16-4 is small enough for a CPU).

Three stages of (depth - 4) / 6 pre-activation blocks, 16·width, 32·width and 64·width
channels, after a 16-channel stem; no dropout. Convolutions start from He init (fan-out), as in
the reference implementation.
"""

from __future__ import annotations

from torch import nn

from advlab.core.errors import InputError
from advlab.models.core import ModelConfig
from advlab.models.preact_resnet import PreActNet


def blocks_per_stage(depth: int) -> int:
    if depth < 10 or (depth - 4) % 6:
        raise InputError(f"train.depth = {depth} is not a wide_resnet depth; expected 6n + 4 "
                         "with n >= 1 (10, 16, 22, 28, 34, ...)")
    return (depth - 4) // 6


def wide_resnet(config: ModelConfig) -> PreActNet:
    depth, width = config.options["depth"], config.options["width"]
    n = blocks_per_stage(depth)
    model = PreActNet(config, 16, [(16 * width, n, 1), (32 * width, n, 2), (64 * width, n, 2)])
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    nn.init.zeros_(model.head.bias)
    return model
