"""The device, chosen once per stage, and the precision context built once for it."""

from __future__ import annotations

import contextlib

import torch

from advlab.errors import DeviceError


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
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (tensor cores); plain fp32 elsewhere, so CPU results are exact."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Moves a model to the device, channels_last on CUDA and CPU.

    Convolutions, BatchNorm and max-pooling run faster in that layout on both (cuDNN; oneDNN
    on CPU: about 1.4x for a training step and 1.5-2x for evaluation, benchmarks/speed.py).
    Inputs may stay NCHW: a channels_last weight makes the convolution choose that layout.
    Results change only by float rounding.
    """
    model = model.to(device)
    if device.type in ("cuda", "cpu"):
        model = model.to(memory_format=torch.channels_last)
    return model
