"""The device is chosen once: auto prefers CUDA, then MPS, then the CPU; an explicit device
this machine lacks is an input error. Availability is faked, so every branch runs anywhere."""

from __future__ import annotations

import pytest
import torch

from advlab.core.device import pick_device
from advlab.core.errors import DeviceError


@pytest.fixture
def machine(monkeypatch):
    """fake(cuda=N GPUs, mps=bool): what pick_device sees; the CUDA flags it sets are restored."""
    flags = (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
             torch.backends.cuda.matmul.allow_tf32)

    def fake(cuda: int, mps: bool) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    yield fake
    (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
     torch.backends.cuda.matmul.allow_tf32) = flags


@pytest.mark.parametrize("cuda, mps, chosen", [(0, False, "cpu"), (0, True, "mps"),
                                               (1, False, "cuda"), (2, True, "cuda")])
def test_auto_prefers_cuda_then_mps_then_cpu(machine, cuda, mps, chosen):
    machine(cuda, mps)
    assert pick_device("auto").type == chosen


@pytest.mark.parametrize("name", ["cpu", "cuda", "cuda:1", "mps"])
def test_an_available_explicit_device_is_used(machine, name):
    machine(2, True)
    assert pick_device(name) == torch.device(name)


@pytest.mark.parametrize("cuda, mps, name, message", [
    (0, True, "cuda", "CUDA is not available"),
    (1, False, "cuda:1", "only 1 CUDA device"),
    (1, False, "mps", "MPS is not available"),
])
def test_an_absent_explicit_device_is_an_input_error(machine, cuda, mps, name, message):
    machine(cuda, mps)
    with pytest.raises(DeviceError, match=message) as caught:
        pick_device(name)
    assert f"base.device = {name!r}" in str(caught.value)
