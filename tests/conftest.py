"""Shared tiny data: generated, seeded, a few hundred images; the suite runs offline in minutes."""

from __future__ import annotations

import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from advlab.data.formats import CIFAR_MD5, md5
from advlab.data.images import ImageSet
from advlab.data.synthetic import synthetic_images
from advlab.models import LabCNN, build_model, model_config
from advlab.params.train import Train
from advlab.training.loop import FitJob, fit

# Tiny models and single-image passes gain nothing from threads, and on 2 busy cores each op's
# thread barrier can wait out a scheduler time slice (measured up to 30x slower): one thread,
# here and in every process the tests start (stage scripts, dvc's stages: they inherit it).
torch.set_num_threads(1)
# Offline whatever the machine: with a Studio token (`dvc studio login`), dvc exp run and the
# train stage's DVCLive would send the tests' runs to DVC Studio. Spawned processes inherit it.
os.environ["DVC_STUDIO_OFFLINE"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")
# torch.compile's inductor compiles in this process: its pool of compile processes would take
# the cores from the other workers (test_compile from a cold cache: 40 s with it, 26 s without)
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.invalid",
                "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.invalid"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests first: the workers (pytest-xdist, `-n`; a file's tests share a worker,
    so its module fixtures run once) then end within a fast test of each other, not one of
    them running a pipeline alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable


# What `dvc repro` and `dvc exp run` leave in the workspace: the last experiment's params.yaml,
# dvc.lock and tracked metrics and plots. The tests start from the committed ones.
EXPERIMENT_STATE = ("params.yaml", "dvc.lock", "metrics/", "plots/")


def committed(name: str) -> bytes | None:
    """The file NAME (a path from the repository root) as HEAD holds it; None where it has none."""
    shown = subprocess.run(["git", "show", f"HEAD:{name}"], cwd=ROOT, capture_output=True)
    return shown.stdout if shown.returncode == 0 else None


COMMITTED_PARAMS = committed("params.yaml").decode()


def copy_repo(dest: Path) -> Path:
    """The files git would commit (tracked, or untracked and not ignored), as a fresh git
    repository with one commit; the experiment state (EXPERIMENT_STATE) as committed."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, check=True, capture_output=True, text=True).stdout
    for name in filter(None, listed.split("\0")):
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        if not name.startswith(EXPERIMENT_STATE):
            if (ROOT / name).is_file():
                shutil.copy2(ROOT / name, dest / name)
        elif (content := committed(name)) is not None:
            (dest / name).write_bytes(content)
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "copy"]):
        subprocess.run(["git", *command], cwd=dest, env=repo_env(dest), check=True,
                       capture_output=True)
    return dest


def idx_bytes(array: np.ndarray, code: int = 8) -> bytes:
    """An idx file (Fashion-MNIST's format); code is its element type (8: uint8, 0x0C: int32,
    0x0A: none)."""
    header = bytes([0, 0, code, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8 if code == 8 else ">i4").tobytes()


def patch_official_md5s(monkeypatch: pytest.MonkeyPatch, batches: Path) -> None:
    """Makes the CIFAR batches in `batches` the "official" ones, for the fetching and the reading
    code alike: CIFAR_MD5 is patched in place, the one dict both modules hold."""
    for path in batches.iterdir():
        monkeypatch.setitem(CIFAR_MD5, path.name, md5(path))


def stage_argv(cmd: str, params: dict) -> list[str]:
    """A dvc.yaml stage's command as DVC runs it: each ${key} filled in from params (a parsed
    params.yaml, as Params.model_dump() gives it), then split into words."""
    def value(match: re.Match) -> str:
        node = params
        for key in match.group(1).split("."):
            node = node[key]
        return str(node)

    return shlex.split(re.sub(r"\$\{([\w.]+)\}", value, cmd))


def run_stage_script(monkeypatch: pytest.MonkeyPatch, script: str, *args: str) -> None:
    """stages/SCRIPT run in this process, as `python stages/SCRIPT ARGS` would run it."""
    monkeypatch.setattr(sys, "argv", [script, *args])
    runpy.run_path(str(ROOT / "stages" / script), run_name="__main__")


def repo_env(repo: Path) -> dict[str, str]:
    """The environment for commands in a copy: its advlab first on the path, this Python's dvc,
    and a git identity (`dvc exp run` commits experiment refs)."""
    return {**os.environ, **GIT_IDENTITY, "PYTHONPATH": str(repo),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


@pytest.fixture(scope="session")
def tiny_sets() -> dict[str, ImageSet]:
    """Disjoint synthetic train (600), val (200) and test (200) sets of 3x32x32 images."""
    images = synthetic_images(1000, seed=7)
    index = torch.arange(1000)
    return {"train": images.subset(index[:600]), "val": images.subset(index[600:800]),
            "test": images.subset(index[800:])}


def train_tiny(sets: dict[str, ImageSet], epochs: int = 2, seed: int = 0, **overrides) -> tuple:
    """A LabCNN trained on the tiny sets; returns (model, history)."""
    cfg = Train(epochs=epochs, batch_size=32, **overrides)
    torch.manual_seed(seed)
    model = build_model(model_config("lab_cnn", sets["train"]))
    history = fit(FitJob(model, sets["train"], sets["val"], cfg, seed, eval_batch_size=128))
    return model.eval(), history


@pytest.fixture(scope="session")
def trained_model(tiny_sets) -> LabCNN:
    """A small model trained for two epochs on the tiny sets (shared: treat as read-only)."""
    model, _ = train_tiny(tiny_sets)
    return model


@pytest.fixture
def linear_classifier() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A seeded linear model of 10 classes, 32 random 3x8x8 images and its predictions as their
    labels: every image correct, for comparisons with the reference AutoAttack's code."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10)).eval()
    x = torch.rand(32, 3, 8, 8)
    with torch.no_grad():
        return model, x, model(x).argmax(1)


def run_in(cwd: Path, *command: str) -> str:
    """COMMAND run in the copy `cwd` (repo_env); fails with its output unless it exits 0."""
    done = subprocess.run(command, cwd=cwd, env=repo_env(cwd), capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout
