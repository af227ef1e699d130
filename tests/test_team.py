"""Sharing experiments as a team does (docs/experiments-and-ci.md): two clones of one git
remote each run a CI-profile experiment and `dvc exp push` it (git refs to the git remote,
outputs to the DVC remote); a third clone pulls both, compares them, and `dvc pull`s one
experiment's model. A bare local git repository and a local folder stand in for the remotes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import copy_repo, repo_env

from advlab.data.formats import md5
from advlab.models import load_model

# the CI profile shrunk to seconds, run up to the test stage (attack and report add nothing
# to what is shared)
SMALL = ["-S", "data.synthetic_train=100", "-S", "data.synthetic_test=20",
         "-S", "data.train_size=64", "-S", "data.val_size=20", "-S", "train.epochs=1",
         "-S", "evaluate.batch_size=100", "test"]


def run(cwd: Path, *command: str) -> str:
    done = subprocess.run(command, cwd=cwd, env=repo_env(cwd), capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def dvc(cwd: Path, *args: str) -> str:
    return run(cwd, sys.executable, "-m", "dvc", *args)


@pytest.mark.slow
def test_two_clones_push_experiments_a_third_pulls_compares_and_gets_a_model(tmp_path):
    remote = tmp_path / "remote.git"
    run(tmp_path, "git", "init", "-q", "--bare", str(remote))
    origin = copy_repo(tmp_path / "origin")  # the project, as its maintainer commits it
    dvc(origin, "remote", "add", "-d", "team", str(tmp_path / "dvc-store"))
    run(origin, "git", "commit", "-qam", "DVC remote: the team's store")
    run(origin, "git", "push", "-q", str(remote), "HEAD:refs/heads/main")

    clones = {}
    for name, extra in (("alice", []), ("bob", ["-S", "train.lr=0.003"])):
        clone = clones[name] = tmp_path / name
        run(tmp_path, "git", "clone", "-q", "-b", "main", str(remote), str(clone))
        run(clone, sys.executable, "-m", "advlab.experiments.profile", "ci", "-n", name,
            *SMALL, *extra)
        dvc(clone, "exp", "push", "origin", name)

    carol = tmp_path / "carol"
    run(tmp_path, "git", "clone", "-q", "-b", "main", str(remote), str(carol))
    assert set(dvc(carol, "exp", "list", "--name-only", "origin").split()) == {"alice", "bob"}
    dvc(carol, "exp", "pull", "--no-cache", "origin", "alice", "bob")  # refs: params, metrics
    table = run(carol, sys.executable, "-m", "advlab.experiments.compare", "alice", "bob", "--md")
    for name, clone in clones.items():
        test_acc = json.loads((clone / "metrics/test.json").read_text())["accuracy"]
        row = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
        assert f"| {test_acc:.4g} |" in row, table
    assert "0.003" in table  # bob's lr, the param that differs

    dvc(carol, "exp", "branch", "bob", "bob")  # keep bob's experiment as a branch
    run(carol, "git", "checkout", "-q", "bob")
    dvc(carol, "pull", "models/model.pt")  # from the DVC remote: carol's cache had none
    assert md5(carol / "models/model.pt") == md5(clones["bob"] / "models/model.pt")
    load_model(carol / "models/model.pt")
