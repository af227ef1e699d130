"""benchmarks/gpu.sh on a machine without CUDA: says so, exits 0 and writes nothing."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: gpu.sh measures it")
def test_gpu_script_without_cuda_says_so_and_exits_0():
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    before = sorted(p.name for p in (ROOT / "results").iterdir())
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "no CUDA GPU is visible here" in done.stdout and "nothing measured" in done.stdout
    assert sorted(p.name for p in (ROOT / "results").iterdir()) == before
