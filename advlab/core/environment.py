"""The software and hardware a stage ran on, recorded beside its timing ("environment" in
metrics/STAGE_time.json): `advlab.experiments.compare` shows it where two experiments differ
in it. Its values are text, which the regression gate never judges (it judges numbers)."""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path

import torch


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model (/proc/cpuinfo on Linux, else the architecture)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return f"Apple MPS ({platform.machine()})"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment(device: torch.device) -> dict[str, str]:
    """Python, torch, dvc and the device; on CUDA also the CUDA and cuDNN versions in use."""
    found = {"python": platform.python_version(), "torch": str(torch.__version__),
             "dvc": package_version("dvc"), "device": f"{device.type}: {device_name(device)}"}
    if device.type == "cuda":
        found["cuda"] = str(torch.version.cuda)
        found["cudnn"] = str(torch.backends.cudnn.version())
    return found
