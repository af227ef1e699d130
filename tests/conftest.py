"""Shared tiny data: generated, seeded, a few hundred images; the suite runs offline in minutes."""

from __future__ import annotations

import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from advlab.data.formats import CIFAR_MD5, md5
from advlab.data.images import ImageSet
from advlab.data.synthetic import synthetic_images
from advlab.experiments.profile import deep_merge, flatten
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

ROOT = Path(__file__).resolve().parents[1]
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.invalid",
                "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.invalid"}


def copy_repo(dest: Path) -> Path:
    """The files git would commit (tracked, or untracked and not ignored), as a fresh git
    repository with one commit."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, check=True, capture_output=True, text=True).stdout
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "copy"]):
        subprocess.run(["git", *command], cwd=dest, env=repo_env(dest), check=True,
                       capture_output=True)
    return dest


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


def run_in(cwd: Path, *command: str) -> str:
    """COMMAND run in the copy `cwd` (repo_env); fails with its output unless it exits 0."""
    done = subprocess.run(command, cwd=cwd, env=repo_env(cwd), capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


# The CI profile made smaller still, for the experiments' bookkeeping (not their learning)
CI_SMALLER = {"data": {"synthetic_train": 150, "synthetic_test": 50, "train_size": 100,
                       "val_size": 50}, "train": {"epochs": 1}}
LEARNING_RATES = ("0.003", "0.01")  # the experiments lr-0.003 and lr-0.01


@dataclass
class CiExperiments:
    repo: Path
    out: dict[str, str]  # what each step printed: repro, eps, lr-0.003, lr-0.01
    split_mtime: dict[str, int]  # data/splits/train.pt's after repro, lr-0.003 and lr-0.01
    attack_csv: str  # metrics/attack.csv after the step eps
    reports: list[str]  # reports/ after the step eps


@pytest.fixture(scope="session")
def ci_experiments(tmp_path_factory) -> CiExperiments:
    """One copy of the repository whose committed params.yaml is the CI profile made smaller,
    in which ran, in turn: `dvc repro`; `dvc exp run -S attack.epsilons=[0,0.1]`, removed
    afterwards (`dvc exp remove`); the CI profile as the experiments lr-0.003 (which also sets
    train.weight_decay) and lr-0.01 (`python -m advlab.experiments.profile ci`): the
    experiments listed, and the workspace that of lr-0.01. test_pipeline_dvc and
    test_experiments read it (a test that changes the copy restores it)."""
    repo = copy_repo(tmp_path_factory.mktemp("ci_experiments"))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    profile = yaml.safe_load((repo / "profiles/ci.yaml").read_text())
    (repo / "params.yaml").write_text(yaml.safe_dump(deep_merge(deep_merge(params, profile),
                                                                CI_SMALLER)))
    run_in(repo, "git", "commit", "-qam", "params.yaml: the CI profile made smaller")
    dvc, split = (sys.executable, "-m", "dvc"), repo / "data/splits/train.pt"
    out, mtime = {"repro": run_in(repo, *dvc, "repro")}, {"repro": split.stat().st_mtime_ns}
    out["eps"] = run_in(repo, *dvc, "exp", "run", "-S", "attack.epsilons=[0,0.1]", "-n", "eps")
    attack_csv = (repo / "metrics/attack.csv").read_text()
    reports = sorted(p.name for p in (repo / "reports").iterdir())
    run_in(repo, *dvc, "exp", "remove", "eps")
    # The first run also sets weight_decay: the second profile run must not inherit it from
    # the workspace params.yaml, where `dvc exp run` left it.
    extra = {LEARNING_RATES[0]: ["-S", "train.weight_decay=0.0005"], LEARNING_RATES[1]: []}
    smaller = [arg for key, value in flatten(CI_SMALLER).items()
               for arg in ("-S", f"{key}={value}")]
    for lr in LEARNING_RATES:  # the caller's -S win over the profile's own keys
        out[f"lr-{lr}"] = run_in(repo, sys.executable, "-m", "advlab.experiments.profile", "ci",
                                 *smaller, *extra[lr], "-S", f"train.lr={lr}", "-n", f"lr-{lr}")
        mtime.setdefault(f"lr-{lr}", split.stat().st_mtime_ns)
    return CiExperiments(repo, out, mtime, attack_csv, reports)
