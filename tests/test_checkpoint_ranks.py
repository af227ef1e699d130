"""Checkpoints under torchrun: plain weights (no DDP `module.` prefix) and the number of
processes in the fingerprint; GPU counts and named GPUs that DDP cannot use are params errors."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
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


RESUMED_WORLD = 2


def fit_ranks(rank: int, folder: str) -> None:
    """On this gloo rank, fit_resumable of 2 epochs of FGSM-RS (an eval-mode attack, so it
    reads this rank's BatchNorm statistics) uninterrupted, then interrupted after epoch 1 and
    rerun; rank 0 saves each run's weights and BatchNorm statistics as NAME.pt.weights."""
    from test_resume import tiny_sets

    from advlab.models import build_model, model_config
    from advlab.params import Params
    from advlab.params.train import Train
    from advlab.training.checkpoint import fit_resumable, run_inputs
    from advlab.training.distributed import Ranks, unwrap
    from advlab.training.loop import FitJob

    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{folder}/store",
                                         rank=rank, world_size=RESUMED_WORLD)
    train_set, val_set = tiny_sets(64, 16)
    cfg = Train(epochs=2, batch_size=16, adversarial="fgsm_rs")
    inputs = run_inputs(Params(train=cfg), [], STAGE, torch.device("cpu"), RESUMED_WORLD)

    def fit(name: str, stop_after: int | None = None) -> None:
        torch.manual_seed(0)
        model = torch.nn.parallel.DistributedDataParallel(
            build_model(model_config("lab_cnn", train_set)))

        def stop(result) -> None:
            if result.epoch == stop_after:
                raise KeyboardInterrupt

        job = FitJob(model, train_set, val_set, cfg, 0, 16, Ranks(rank, RESUMED_WORLD, rank),
                     on_epoch=stop)
        with contextlib.suppress(KeyboardInterrupt):
            fit_resumable(job, Path(folder) / f"{name}.pt", inputs, log=lambda line: None)
        if stop_after is None and rank == 0:
            torch.save(unwrap(model).state_dict(), f"{folder}/{name}.pt.weights")

    try:
        fit("whole")
        fit("resumed", stop_after=1)
        fit("resumed")
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_resumed_from_a_checkpoint_equal_an_uninterrupted_run(tmp_path):
    """The checkpoint holds rank 0's BatchNorm statistics and every rank resumes with them, so
    at the end of an epoch every rank of an uninterrupted run must hold them too."""
    mp.spawn(fit_ranks, args=(str(tmp_path),), nprocs=RESUMED_WORLD)
    whole, resumed = (torch.load(tmp_path / f"{name}.pt.weights", weights_only=True)
                      for name in ("whole", "resumed"))
    assert all(torch.equal(resumed[k], v) for k, v in whole.items())
