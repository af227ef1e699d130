"""The experiments workflow: two `dvc exp run`s on the CI profile, then `dvc exp show --json`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import copy_repo, repo_env

REPO = Path(__file__).resolve().parents[1]

# The CI profile made smaller still: the test checks bookkeeping, not learning.
SMALLER = ["-S", "data.synthetic_train=500", "-S", "data.synthetic_test=200",
           "-S", "data.train_size=300", "-S", "data.val_size=200", "-S", "train.epochs=1"]
LEARNING_RATES = ("0.003", "0.01")


def run(cwd: Path, *command: str) -> str:
    done = subprocess.run(command, cwd=cwd, env=repo_env(cwd), capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def experiments(shown: list[dict]) -> list[dict]:
    """The experiment entries of `dvc exp show --json`, below the baseline commit."""
    return [rev for entry in shown for group in entry.get("experiments") or []
            for rev in group["revs"]]


@pytest.mark.slow
def test_two_experiments_are_listed_with_their_params_and_metrics(tmp_path):
    copy_repo(tmp_path)
    # The first run also sets weight_decay: the second profile run must not inherit it from
    # the workspace params.yaml, where `dvc exp run` left it.
    extra = {LEARNING_RATES[0]: ["-S", "train.weight_decay=0.0005"], LEARNING_RATES[1]: []}
    for lr in LEARNING_RATES:
        run(tmp_path, sys.executable, "-m", "advlab.profile", "ci", *SMALLER, *extra[lr],
            "-S", f"train.lr={lr}", "-n", f"lr-{lr}")

    listed = {exp["name"]: exp["data"] for exp in experiments(json.loads(
        run(tmp_path, "dvc", "exp", "show", "--json")))}
    assert set(listed) == {f"lr-{lr}" for lr in LEARNING_RATES}
    for lr in LEARNING_RATES:
        data = listed[f"lr-{lr}"]
        assert data["params"]["params.yaml"]["data"]["train"]["lr"] == float(lr)
        metrics = data["metrics"]
        assert 0 <= metrics["metrics/test.json"]["data"]["accuracy"] <= 1
        assert metrics["metrics/train.json"]["data"]["epochs"] == 1
    weight_decay = {lr: listed[f"lr-{lr}"]["params"]["params.yaml"]["data"]["train"]
                    ["weight_decay"] for lr in LEARNING_RATES}
    assert weight_decay == {LEARNING_RATES[0]: 0.0005, LEARNING_RATES[1]: 0.0}
