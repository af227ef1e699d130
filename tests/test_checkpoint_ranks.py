"""Checkpoints under torchrun: plain weights (no DDP `module.` prefix) and the number of
processes in the fingerprint; GPU counts and named GPUs that DDP cannot use are params errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from advlab.core.io import load_torch
from advlab.data.synthetic import synthetic_images
from advlab.params.fields import ParamsError
from advlab.training.distributed import check_processes, torchrun_command

STAGE = Path(__file__).resolve().parents[1] / "stages" / "train.py"
ARGS = ["--splits", "splits", "--model", "m.pt", "--metrics", "metrics", "--tensorboard", "tb",
        "--checkpoint", "checkpoint.pt"]


def workdir(folder: Path) -> Path:
    images = synthetic_images(300, seed=4)
    index = torch.arange(300)
    (folder / "splits").mkdir(parents=True)
    images.subset(index[:256]).save(folder / "splits" / "train.pt")
    images.subset(index[256:]).save(folder / "splits" / "val.pt")
    (folder / "params.yaml").write_text(yaml.safe_dump(
        {"base": {"device": "cpu"}, "train": {"epochs": 1, "batch_size": 32, "gpus": 1},
         "evaluate": {"batch_size": 100}}))
    return folder


def train(folder: Path, processes: int | None = None) -> str:
    """The train stage, plain (None) or started by hand under torchrun with `processes` ranks."""
    command = [sys.executable, str(STAGE), *ARGS]
    if processes is not None:
        command = torchrun_command(processes, command[1:])
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def saved(folder: Path) -> dict:
    return load_torch(folder / "checkpoint.pt")


@pytest.mark.slow
def test_checkpoint_of_two_gloo_processes_is_refused_by_a_plain_run(tmp_path):
    work = workdir(tmp_path)
    train(work, processes=2)  # train.gpus stays 1: torchrun started by hand, as scale-out.md shows
    blob = saved(work)
    assert blob["inputs"]["processes"] == 2
    assert not [k for k in blob["model"] if k.startswith("module.")]

    out = train(work)
    assert "is from different params, data or code (processes changed); starting fresh" in out
    assert saved(work)["inputs"]["processes"] == 1


@pytest.mark.slow
def test_checkpoint_of_a_one_process_torchrun_resumes_in_a_plain_run(tmp_path):
    work = workdir(tmp_path)
    train(work, processes=1)
    assert saved(work)["inputs"]["processes"] == 1
    out = train(work)
    assert "already holds all 1 epochs of this run; reusing it" in out


def cuda(monkeypatch, visible: int) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)


def test_more_processes_than_visible_gpus_is_a_params_error(monkeypatch):
    cuda(monkeypatch, visible=2)
    check_processes(torch.device("cuda"), 2, "cuda")
    with pytest.raises(ParamsError, match=r"train.gpus = 3 is not allowed; expected at most 2 "
                                          r"\(the CUDA GPUs visible here\)"):
        check_processes(torch.device("cuda"), 3, "auto")


def test_a_named_gpu_with_several_processes_is_refused(monkeypatch):
    cuda(monkeypatch, visible=4)
    check_processes(torch.device("cuda", 1), 1, "cuda:1")  # one process: honoured as given
    with pytest.raises(ParamsError, match="base.device = 'cuda:1' is not allowed with 2 "
                                          "processes; expected cuda or auto"):
        check_processes(torch.device("cuda", 1), 2, "cuda:1")


def test_gloo_processes_on_cpu_need_no_gpu(monkeypatch):
    cuda(monkeypatch, visible=0)
    check_processes(torch.device("cpu"), 4, "cpu")

