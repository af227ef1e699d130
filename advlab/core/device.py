"""The device, chosen once per stage, and the precision context built once for it.

Every branch that runs only on CUDA is listed, with how it is tested without a GPU, in
docs/performance.md ("CUDA-only code").
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from advlab.core.errors import DeviceError

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(name: str = "auto") -> torch.device:
    """auto: CUDA, then MPS, then CPU. An explicit device that is absent is an error."""
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"base.device = {name!r} but CUDA is not available here; "
                          "use auto or cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise DeviceError(f"base.device = {name!r} but only {torch.cuda.device_count()} "
                          "CUDA device(s) exist")
    if device.type == "mps" and not has_mps:
        raise DeviceError(f"base.device = {name!r} but MPS is not available here; "
                          "use auto or cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # training; evaluation turns it off (evaluating)
        set_tf32("tf32")
    return device


def set_tf32(mode: str) -> None:
    """TF32 ("tf32") or full fp32 ("ieee") for CUDA matmuls and cuDNN convolutions, through
    torch's fp32_precision API (mixing it with the legacy allow_tf32 flags raises)."""
    torch.backends.cuda.matmul.fp32_precision = mode
    torch.backends.cudnn.conv.fp32_precision = mode


@contextlib.contextmanager
def no_tf32() -> Iterator[None]:
    """Full fp32 matmuls and convolutions for the block: pick_device turns TF32 on for CUDA,
    whose 10-bit mantissa could flip the sign of small gradient entries."""
    saved = torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision
    set_tf32("ieee")
    try:
        yield
    finally:
        torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = saved


def cuda_capability(device: torch.device) -> tuple[int, int]:
    """The CUDA card's compute capability (major, minor); tests replace this function."""
    return torch.cuda.get_device_capability(device)


def pick_precision(name: str, device: torch.device) -> torch.dtype:
    """The autocast dtype for base.precision. auto: bf16 on CUDA cards with native bf16
    (compute capability 8.0 and up: A100, RTX 30xx, H100); fp16, with a gradient scaler in
    training, on older cards (T4, V100, RTX 20xx: tensor cores in fp16, no bf16 convolutions
    in cuDNN); fp32 on CPU and MPS, where autocast buys this model little and fp32 is exact."""
    if name != "auto":
        return PRECISIONS[name]
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if cuda_capability(device) >= (8, 0) else torch.float16


def autocast(model: nn.Module, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast to the model's precision (set by prepare_model); fp32: no context at all."""
    dtype = getattr(model, "precision", torch.float32)
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def gradient_scaler(model: nn.Module, device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling for fp16 training (its 5 exponent bits underflow small gradients); bf16 and
    fp32 share fp32's range and need none: a disabled scaler passes the loss and step through."""
    enabled = getattr(model, "precision", torch.float32) == torch.float16
    return torch.amp.GradScaler(device.type, enabled=enabled)


@contextlib.contextmanager
def reproducible_cudnn() -> Iterator[None]:
    """cuDNN without autotuning and with deterministic algorithms for the block.

    With cudnn.benchmark each process times the candidate algorithms and keeps the fastest,
    so the test and attack stages (two processes) may convolve with different algorithms whose
    sums round differently, and a near-tie could then be argmax-ed differently: FGSM accuracy at
    eps = 0 would no longer equal the test accuracy exactly. Without it cuDNN's choice is a fixed
    function of the shapes and the card. Training keeps autotuning. No effect off CUDA.
    """
    saved = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved


@contextlib.contextmanager
def evaluating(model: nn.Module, device: torch.device) -> Iterator[None]:
    """The context of every evaluation forward pass: validation, test and the attack's logits."""
    with autocast(model, device), reproducible_cudnn():
        yield


def prepare_model(model: nn.Module, device: torch.device,
                  precision: torch.dtype = torch.float32) -> nn.Module:
    """Moves a model to the device, channels_last on CUDA and CPU, and records the precision
    it runs in (`model.precision`, read by autocast).

    Convolutions, BatchNorm and max-pooling run faster in that layout on both (cuDNN; oneDNN
    on CPU: about 1.4x for a training step and 1.5-2x for evaluation, benchmarks/speed.py).
    Inputs may stay NCHW: a channels_last weight makes the convolution choose that layout.
    Results change only by float rounding.
    """
    model = model.to(device)
    if device.type in ("cuda", "cpu"):
        model = model.to(memory_format=torch.channels_last)
    model.precision = precision
    return model
