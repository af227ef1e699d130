"""End to end through the real dvc CLI, in one temporary copy of the repository for the whole
module (ci_experiments): `dvc repro`, an experiment on the attack alone, and two `dvc exp run`s
of the CI profile, then `dvc exp show --json`, `dvc status`, `advlab.experiments.compare` and
an offline `dvc plots diff` of the two."""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import vl_convert
import yaml
from conftest import copy_repo, run_in

from advlab.experiments.profile import deep_merge, flatten
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
    """`dvc ARGS` run in the copy `repo`; fails with its output unless it exits 0."""
    return run_in(repo, sys.executable, "-m", "dvc", *args)


def stale(repo: Path) -> set[str]:
    """The stages `dvc status` finds changed."""
    return set(json.loads(dvc(repo, "status", "--json")))


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


@pytest.fixture(scope="module")
def ci_experiments(tmp_path_factory) -> CiExperiments:
    """One copy of the repository whose committed params.yaml is the CI profile made smaller,
    in which ran, in turn: `dvc repro`; `dvc exp run -S attack.epsilons=[0,0.1]`, removed
    afterwards (`dvc exp remove`); the CI profile as the experiments lr-0.003 (which also sets
    train.weight_decay) and lr-0.01 (`python -m advlab.experiments.profile ci`): the
    experiments listed, and the workspace that of lr-0.01. The tests below read it (a
    test that changes the copy restores it)."""
    repo = copy_repo(tmp_path_factory.mktemp("ci_experiments"))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    profile = yaml.safe_load((repo / "profiles/ci.yaml").read_text())
    (repo / "params.yaml").write_text(yaml.safe_dump(deep_merge(deep_merge(params, profile),
                                                                CI_SMALLER)))
    run_in(repo, "git", "commit", "-qam", "params.yaml: the CI profile made smaller")
    split = repo / "data/splits/train.pt"
    out, mtime = {"repro": dvc(repo, "repro")}, {"repro": split.stat().st_mtime_ns}
    out["eps"] = dvc(repo, "exp", "run", "-S", "attack.epsilons=[0,0.1]", "-n", "eps")
    attack_csv = (repo / "metrics/attack.csv").read_text()
    reports = sorted(p.name for p in (repo / "reports").iterdir())
    dvc(repo, "exp", "remove", "eps")
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
    finally:  # the copy is shared (the tests below)
        subprocess.run(["git", "checkout", "-q", "--", *edited], cwd=repo, check=True)


def experiments(shown: list[dict]) -> list[dict]:
    """The experiment entries of `dvc exp show --json`, below the baseline commit."""
    return [rev for entry in shown for group in entry.get("experiments") or []
            for rev in group["revs"]]


@pytest.mark.slow
def test_repo_are_listed_with_their_params_and_metrics(ci_experiments):
    tmp_path = ci_experiments.repo
    listed = {exp["name"]: exp["data"] for exp in experiments(json.loads(
        dvc(tmp_path, "exp", "show", "--json")))}
    assert set(listed) == {f"lr-{lr}" for lr in LEARNING_RATES}
    for lr in LEARNING_RATES:
        data = listed[f"lr-{lr}"]
        assert data["params"]["params.yaml"]["data"]["train"]["lr"] == float(lr)
        metrics = data["metrics"]
        assert 0 <= metrics["metrics/test.json"]["data"]["accuracy"] <= 1
        assert metrics["metrics/train.json"]["data"]["step"] == 1  # DVCLive's: epochs done
    weight_decay = {lr: listed[f"lr-{lr}"]["params"]["params.yaml"]["data"]["train"]
                    ["weight_decay"] for lr in LEARNING_RATES}
    assert weight_decay == {LEARNING_RATES[0]: 0.0005, LEARNING_RATES[1]: 0.0}


@pytest.mark.slow
def test_stages_record_their_time_per_stage_and_attack_method(ci_experiments):
    repo = ci_experiments.repo
    for exp in experiments(json.loads(dvc(repo, "exp", "show", "--json"))):
        metrics = {path: entry["data"] for path, entry in exp["data"]["metrics"].items()}
        attack = exp["data"]["params"]["params.yaml"]["data"]["attack"]
        methods = [*attack["methods"], *(["worst_case"] if attack["ensemble"] else [])]
        assert set(metrics["metrics/attack_time.json"]) == {*methods, "environment"}
        assert set(methods) <= set(metrics["metrics/attack.json"])
        train = metrics["metrics/train_time.json"]
        images = CI_SMALLER["data"]["train_size"] * metrics["metrics/train.json"]["step"]
        assert train["images_per_s"] == pytest.approx(images / train["seconds"], rel=0.01)
        assert set(metrics["metrics/test_time.json"]) == {"seconds", "images_per_s",
                                                          "environment"}
        environments = [metrics[f"metrics/{stage}_time.json"]["environment"]
                        for stage in ("train", "test", "attack")]
        assert environments == [environments[0]] * 3  # one machine ran every stage
        assert environments[0]["torch"] == torch.__version__
        assert environments[0]["python"] == platform.python_version()


@pytest.mark.slow
def test_compare_shows_both_experiments_as_markdown_and_as_an_offline_page(ci_experiments):
    repo = ci_experiments.repo
    shown = {exp["name"]: exp["data"]["metrics"] for exp in experiments(json.loads(
        dvc(repo, "exp", "show", "--json")))}
    lines = run_in(repo, sys.executable, "-m", "advlab.experiments.compare", "--md",
                "--eps", "0.1", "--html", "compare.html").splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["experiment", "train.lr", "train.weight_decay", "val_acc", "test_acc",
                      "fgsm@0.1", "worst_case@0.1", "train_s"]  # worst case: attack.ensemble
    rows = {cells[0]: cells for cells in ([c.strip() for c in line.strip("|").split("|")]
                                          for line in lines[2:])}
    assert set(rows) == {f"lr-{lr}" for lr in LEARNING_RATES}
    for lr in LEARNING_RATES:
        test = shown[f"lr-{lr}"]["metrics/test.json"]["data"]["accuracy"]
        assert float(rows[f"lr-{lr}"][1]) == float(lr)
        assert float(rows[f"lr-{lr}"][4]) == pytest.approx(test, abs=5e-4)  # 4 digits shown
    page = (repo / "compare.html").read_text()
    charts = re.findall(r"<svg.*?</svg>", page, re.S)
    assert len(charts) == 3 and "<script" not in page
    for chart in charts:  # the epoch curves come from each experiment's commit
        assert all(f"lr-{lr}" in chart for lr in LEARNING_RATES)


@pytest.mark.slow
def test_dvc_plots_diff_draws_every_chart_offline(ci_experiments):
    repo = ci_experiments.repo
    dvc(repo, "plots", "diff", *(f"lr-{lr}" for lr in LEARNING_RATES),
        "-o", "page")
    page = (repo / "page" / "index.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), "a remote resource"
    assert "window.vegaEmbed=" in page  # the libraries are inline, from the template
    specs = [json.loads(spec) for spec in
             re.findall(r"var spec = (\{.*?\});\s*vegaEmbed", page, re.S)]
    declared = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    charts = [p for p in declared if isinstance(p, dict)]  # the rest are images
    assert sorted(s["title"]["text"] if isinstance(s["title"], dict) else s["title"]
                  for s in specs) == sorted(next(iter(p)) for p in charts)
    for spec in specs:  # what vega-embed draws in the browser, drawn here without one
        svg = vl_convert.vegalite_to_svg(spec)
        assert svg.startswith("<svg") and "<path" in svg
    assert 'src="static/' in page  # the FGSM examples image, a local file
