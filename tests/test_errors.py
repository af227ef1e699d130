"""Bad input is one line and exit 1; a bug keeps its traceback. Each kind of bad input the
stages meet (params, data files, missing upstream outputs, an absent device) is an InputError."""

from __future__ import annotations

import argparse
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from advlab.core.device import pick_device
from advlab.core.errors import InputError
from advlab.core.io import load_torch
from advlab.core.stage import run_stage
from advlab.data.formats import read_raw
from advlab.data.images import ImageSet, split_train_val
from advlab.data.synthetic import synthetic_images
from advlab.params import DVC_EXPERIMENT, load_params

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def stage_argv(monkeypatch):
    """run_stage parses sys.argv and installs a SIGTERM handler: both restored afterwards."""
    monkeypatch.setattr(sys, "argv", ["stage"])
    handler = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, handler)


def shape_bug() -> None:
    torch.nn.Linear(3, 4)(torch.zeros(2, 5))  # mat1 and mat2 shapes cannot be multiplied


def bad_params(tmp: Path) -> None:
    (tmp / "params.yaml").write_text("train:\n  lr: -1\n")
    load_params(tmp / "params.yaml")


def bad_split_file(tmp: Path) -> None:
    torch.save({"images": torch.zeros(2)}, tmp / "val.pt")
    ImageSet.load(tmp / "val.pt")


def too_few_images(tmp: Path) -> None:
    split_train_val(synthetic_images(20, seed=0), train_size=15, val_size=10, seed=0)


BAD_INPUT: dict[str, tuple[Callable[[Path], object], str]] = {
    "params": (bad_params, "train.lr = -1 is not allowed"),
    "missing data file": (lambda tmp: read_raw(tmp, "synthetic", verify=True), "is missing"),
    "too few images for the split": (too_few_images, "exceeds the 20 images"),
    "missing upstream output": (lambda tmp: load_torch(tmp / "model.pt"),
                                "model.pt does not exist: run the stage that writes it"),
    "malformed split file": (bad_split_file, "is not a split file"),
    "absent device": (lambda tmp: pick_device("cuda:99"), "base.device = 'cuda:99'"),
}


@pytest.mark.parametrize("cause, expected", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_is_one_line_and_exit_1(tmp_path, capsys, cause, expected):
    with pytest.raises(InputError):
        cause(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        run_stage("demo", lambda args: cause(tmp_path), argparse.ArgumentParser())
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("demo: error: ") and expected in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("bug", [shape_bug, lambda: {}["missing key"], lambda: int("x")],
                         ids=["shape mismatch (RuntimeError)", "KeyError", "ValueError"])
def test_a_bug_propagates_from_run_stage(capsys, bug):
    with pytest.raises(Exception) as caught:
        run_stage("demo", lambda args: bug(), argparse.ArgumentParser())
    assert not isinstance(caught.value, (InputError, SystemExit))
    assert "error:" not in capsys.readouterr().err


def test_a_bug_in_a_stage_process_prints_its_traceback(tmp_path):
    script = tmp_path / "stage.py"
    script.write_text("import argparse, torch\nfrom advlab.core.stage import run_stage\n"
                      "def shape_bug():\n    torch.nn.Linear(3, 4)(torch.zeros(2, 5))\n"
                      "run_stage('demo', lambda args: shape_bug(), argparse.ArgumentParser())\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": ""}, timeout=120)
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert "in shape_bug" in done.stderr and "mat1 and mat2 shapes" in done.stderr
    assert "demo: error" not in done.stderr


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
                   cwd=repo, check=True, capture_output=True)


def test_inside_an_experiment_the_params_error_says_how_to_restore_the_file(
        tmp_path, monkeypatch):
    """`dvc exp run -S train.lr=-1` writes -1 into params.yaml and leaves it there when the
    stage fails; the error names the command that restores the committed file, which works."""
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  lr: 0.001\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "params.yaml")
    git(tmp_path, "commit", "-qm", "defaults")
    params.write_text("train:\n  lr: -1\n")  # what the failed experiment left

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(DVC_EXPERIMENT, raising=False)
    with pytest.raises(InputError) as outside:
        load_params()
    assert "git checkout" not in str(outside.value)

    monkeypatch.setenv(DVC_EXPERIMENT, "exp-1234")
    with pytest.raises(InputError) as inside:
        load_params()
    message = str(inside.value)
    assert "\n" not in message and "train.lr = -1" in message
    command = message.split("`")[3]
    assert command == "git checkout params.yaml"
    subprocess.run(shlex.split(command), cwd=tmp_path, check=True, capture_output=True)
    assert yaml.safe_load(params.read_text()) == {"train": {"lr": 0.001}}
