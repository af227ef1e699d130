"""End to end through the real dvc CLI, in a temporary copy of the repository (conftest's
ci_experiments, shared with test_experiments)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import repo_env

from advlab.training.metrics import read_curves

ROOT = Path(__file__).resolve().parents[1]
# For a copy of one's own (test_resume, test_data_source): the smallest data that still runs
# every stage in full, two optimizer steps per epoch, each class in every split, the whole
# ensemble at every eps (the checks are bookkeeping)
TINY = {"data": {"dataset": "synthetic", "synthetic_train": 120, "synthetic_test": 40,
                 "train_size": 64, "val_size": 32},
        "train": {"epochs": 1}, "evaluate": {"batch_size": 200},
        "attack": {"apgd_ce": {"steps": 2}, "apgd_t": {"steps": 2, "targets": 2},
                   "fab_t": {"steps": 2, "targets": 2}, "square": {"queries": 10}}}
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def dvc(repo: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=repo_env(repo),
                          capture_output=True, text=True)
    assert done.returncode == 0, f"dvc {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def stale(repo: Path) -> set[str]:
    """The stages `dvc status` finds changed."""
    return set(json.loads(dvc(repo, "status", "--json")))


@pytest.mark.slow
def test_repro_then_experiment_reruns_only_train_and_later(ci_experiments):
    repo, out = ci_experiments.repo, ci_experiments.out
    for stage in ("download", "split", "train", "test", "attack", "report"):
        assert f"Running stage '{stage}'" in out["repro"]
    train = json.loads((repo / "metrics/train.json").read_text())
    test = json.loads((repo / "metrics/test.json").read_text())
    assert train["step"] == 1 and train["model"]["params"] > 50_000
    assert 0 <= test["accuracy"] <= 1 and len(test["per_class"]) == 10
    assert read_curves(repo / "metrics") == [
        {"epoch": 1, "loss": train["loss"], "val_acc": train["val_acc"]}]
    # DVC reads DVCLive's files: its summary and params in exp show, its tables in plots show
    workspace = json.loads(dvc(repo, "exp", "show", "--json"))[0]
    assert workspace["rev"] == "workspace"
    assert workspace["data"]["metrics"]["metrics/train.json"]["data"] == train
    logged = workspace["data"]["params"]["metrics/train/params.yaml"]["data"]
    assert set(logged) == {"device", "precision", "processes"} and logged["processes"] == 1
    plots = json.loads(dvc(repo, "plots", "show", "--json"))["data"]
    for title, curve in (("Training loss per epoch", "loss"),
                         ("Validation accuracy per epoch", "val_acc")):
        points = plots[title][0]["content"]["data"]["values"]
        assert [(p["step"], float(p[curve])) for p in points] == [("1", train[curve])], title
    test_images = yaml.safe_load((repo / "params.yaml").read_text())["data"]["synthetic_test"]
    assert len((repo / "metrics/confusion.csv").read_text().splitlines()) == test_images + 1

    lr = out["lr-0.003"]  # dvc exp run -S train.lr=0.003 ... (through the CI profile)
    assert "Running stage 'download'" not in lr and "Running stage 'split'" not in lr
    assert "Running stage 'train'" in lr and "Running stage 'test'" in lr
    assert ci_experiments.split_mtime["lr-0.003"] == ci_experiments.split_mtime["repro"]
    shown = json.loads(dvc(repo, "metrics", "show", "--json"))
    assert "metrics/test.json" in json.dumps(shown)

    ran = {stage for stage in ("download", "split", "train", "test", "attack", "report")
           if f"Running stage '{stage}'" in out["eps"]}  # -S attack.epsilons=[0,0.1]
    assert ran == {"attack", "report"}
    attack_rows = ci_experiments.attack_csv.splitlines()
    assert "epsilon" in attack_rows[0].split(",")
    assert len(attack_rows) == 5  # fgsm and worst_case at 2 eps
    assert ci_experiments.reports

    assert dvc(repo, "status") == "Data and pipelines are up to date.\n"
    # A code change reruns exactly the stages whose import closure holds the file
    edited = ("advlab/attacks/square.py", "advlab/reporting/figures.py", "advlab/core/io.py")
    try:
        # train and test keep their models: they never run an attack
        for module in edited[:2]:
            with open(repo / module, "a") as f:
                f.write("#\n")
            assert stale(repo) == {"attack", "report"}, module
        with open(repo / edited[2], "a") as f:
            f.write("#\n")
        assert stale(repo) == set(STAGES)
    finally:  # the copy is shared (test_experiments)
        subprocess.run(["git", "checkout", "-q", "--", *edited], cwd=repo, check=True)
