"""The experiments workflow: two `dvc exp run`s on the CI profile (conftest's ci_experiments, run
once for the session), then `dvc exp show --json`, `advlab.experiments.compare` and an offline
`dvc plots diff` of the two."""

from __future__ import annotations

import json
import platform
import re
import sys
from pathlib import Path

import pytest
import torch
import vl_convert
import yaml
from conftest import CI_SMALLER, LEARNING_RATES
from conftest import run_in as run

REPO = Path(__file__).resolve().parents[1]
TRAIN_SIZE = CI_SMALLER["data"]["train_size"]


def experiments(shown: list[dict]) -> list[dict]:
    """The experiment entries of `dvc exp show --json`, below the baseline commit."""
    return [rev for entry in shown for group in entry.get("experiments") or []
            for rev in group["revs"]]


@pytest.fixture(scope="module")
def two_experiments(ci_experiments) -> Path:
    """A copy of the repository in which the CI profile ran twice, as lr-0.003 and lr-0.01."""
    return ci_experiments.repo


@pytest.mark.slow
def test_two_experiments_are_listed_with_their_params_and_metrics(two_experiments):
    tmp_path = two_experiments
    listed = {exp["name"]: exp["data"] for exp in experiments(json.loads(
        run(tmp_path, "dvc", "exp", "show", "--json")))}
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
def test_stages_record_their_time_per_stage_and_attack_method(two_experiments):
    for exp in experiments(json.loads(run(two_experiments, "dvc", "exp", "show", "--json"))):
        metrics = {path: entry["data"] for path, entry in exp["data"]["metrics"].items()}
        attack = exp["data"]["params"]["params.yaml"]["data"]["attack"]
        methods = [*attack["methods"], *(["worst_case"] if attack["ensemble"] else [])]
        assert set(metrics["metrics/attack_time.json"]) == {*methods, "environment"}
        assert set(methods) <= set(metrics["metrics/attack.json"])
        train = metrics["metrics/train_time.json"]
        images = TRAIN_SIZE * metrics["metrics/train.json"]["step"]
        assert train["images_per_s"] == pytest.approx(images / train["seconds"], rel=0.01)
        assert set(metrics["metrics/test_time.json"]) == {"seconds", "images_per_s",
                                                          "environment"}
        environments = [metrics[f"metrics/{stage}_time.json"]["environment"]
                        for stage in ("train", "test", "attack")]
        assert environments == [environments[0]] * 3  # one machine ran every stage
        assert environments[0]["torch"] == torch.__version__
        assert environments[0]["python"] == platform.python_version()


@pytest.mark.slow
def test_compare_shows_both_experiments_as_markdown_and_as_an_offline_page(two_experiments):
    shown = {exp["name"]: exp["data"]["metrics"] for exp in experiments(json.loads(
        run(two_experiments, "dvc", "exp", "show", "--json")))}
    lines = run(two_experiments, sys.executable, "-m", "advlab.experiments.compare", "--md",
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
    page = (two_experiments / "compare.html").read_text()
    charts = re.findall(r"<svg.*?</svg>", page, re.S)
    assert len(charts) == 3 and "<script" not in page
    for chart in charts:  # the epoch curves come from each experiment's commit
        assert all(f"lr-{lr}" in chart for lr in LEARNING_RATES)


@pytest.mark.slow
def test_dvc_plots_diff_draws_every_chart_offline(two_experiments):
    run(two_experiments, "dvc", "plots", "diff", *(f"lr-{lr}" for lr in LEARNING_RATES),
        "-o", "page")
    page = (two_experiments / "page" / "index.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), "a remote resource"
    assert "window.vegaEmbed=" in page  # the libraries are inline, from the template
    specs = [json.loads(spec) for spec in
             re.findall(r"var spec = (\{.*?\});\s*vegaEmbed", page, re.S)]
    declared = yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
    charts = [p for p in declared if isinstance(p, dict)]  # the rest are images
    assert sorted(s["title"]["text"] if isinstance(s["title"], dict) else s["title"]
                  for s in specs) == sorted(next(iter(p)) for p in charts)
    for spec in specs:  # what vega-embed draws in the browser, drawn here without one
        svg = vl_convert.vegalite_to_svg(spec)
        assert svg.startswith("<svg") and "<path" in svg
    assert 'src="static/' in page  # the FGSM examples image, a local file
