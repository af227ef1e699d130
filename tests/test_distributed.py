"""Data-parallel training: two gloo processes on the CPU, launched by the train stage itself."""

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from advlab.data.synthetic import synthetic_images
from advlab.models import load_model
from advlab.training.distributed import torchrun_command
from advlab.training.metrics import read_curves

STAGE = Path(__file__).resolve().parents[1] / "stages" / "train.py"


def run_train(folder: Path, gpus: int) -> subprocess.CompletedProcess:
    (folder / "params.yaml").write_text(yaml.safe_dump(
        {"train": {"epochs": 1, "batch_size": 32, "gpus": gpus}, "evaluate": {"batch_size": 200}}))
    return subprocess.run([sys.executable, str(STAGE), "--splits", "splits", "--model", "m.pt",
                           "--metrics", "metrics", "--tensorboard", "tb",
                           "--checkpoint", "checkpoint.pt"],
                          cwd=folder, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_two_gloo_processes_train_in_step_and_rank_0_writes_once(tmp_path):
    images = synthetic_images(500, seed=4)
    index = torch.arange(500)
    (tmp_path / "splits").mkdir()
    # 417 = 13 batches of 32 + 1 image: the last global batch is smaller than the world
    images.subset(index[:417]).save(tmp_path / "splits" / "train.pt")
    images.subset(index[417:]).save(tmp_path / "splits" / "val.pt")

    done = run_train(tmp_path, gpus=2)
    assert done.returncode == 0, done.stderr
    assert "weights identical across 2 ranks" in done.stdout
    assert done.stdout.count("train: wrote") == 1 and done.stdout.count("train: done") == 1
    assert sorted(p.name for p in (tmp_path / "metrics").iterdir()) == [
        "train", "train.json", "train_time.json"]  # train/: DVCLive's, written by rank 0 alone
    assert [row["epoch"] for row in read_curves(tmp_path / "metrics")] == [1]
    assert "processes: 2" in (tmp_path / "metrics/train/params.yaml").read_text()
    assert not list(tmp_path.rglob("*.tmp"))
    assert (tmp_path / "checkpoint.pt").is_file() and list((tmp_path / "tb").iterdir())
    model = load_model(tmp_path / "m.pt")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_torchrun_command_reruns_the_same_script():
    command = torchrun_command(4, ["stages/train.py", "--model", "m.pt"])
    assert command[1:3] == ["-m", "torch.distributed.run"]
    assert "--nproc-per-node=4" in command
    assert command[-3:] == ["stages/train.py", "--model", "m.pt"]


def test_scale_out_doc_starts_torchrun_with_the_train_stage_arguments():
    """docs/scale-out.md's hand-started torchrun runs stages/train.py as dvc.yaml does."""
    root = STAGE.parents[1]
    text = (root / "docs/scale-out.md").read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if "torchrun --standalone" in line)
    documented = shlex.split(line.split("#")[0])
    stage = shlex.split(yaml.safe_load((root / "dvc.yaml").read_text())
                        ["stages"]["train"]["cmd"])
    assert documented[documented.index("stages/train.py"):] == stage[1:]
