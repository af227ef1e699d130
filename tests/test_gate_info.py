"""The gate reports timing metrics (an `info` rule in gate.yaml) and never fails on them."""

from __future__ import annotations

import json
import re
from pathlib import Path

from advlab.experiments.gate import main

REPO = Path(__file__).resolve().parents[1]
REPRODUCIBLE = {p.name: json.loads(p.read_text()) for p in (REPO / "results/ci").glob("*.json")
                if not p.name.endswith("_time.json")}  # the CI baseline's own metrics


def write(folder: Path, files: dict[str, object]) -> Path:
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_text(json.dumps(data))
    return folder


def run_gate(tmp_path: Path, capsys, baseline: dict, current: dict) -> tuple[int, dict]:
    """Runs the gate with the repository's gate.yaml; returns (exit code, verdict per metric)."""
    code = main(["--baseline", str(write(tmp_path / "base", baseline)),
                 "--current", str(write(tmp_path / "cur", current)),
                 "--spec", str(REPO / "gate.yaml")])
    lines = capsys.readouterr().out.splitlines()
    verdicts = {line.split()[0]: re.split(r"\s{2,}", line)[-1] for line in lines[1:]
                if line and not line.startswith("gate:")}
    return code, verdicts


def test_ten_times_slower_is_reported_not_failed(tmp_path, capsys):
    fast = {**REPRODUCIBLE, "train_time.json": {"seconds": 10.0, "images_per_s": 400.0},
            "attack_time.json": {"pgd": {"seconds": 3.0, "images_per_s": 900.0}}}
    slow = {**REPRODUCIBLE, "train_time.json": {"seconds": 100.0, "images_per_s": 40.0},
            "attack_time.json": {"pgd": {"seconds": 30.0, "images_per_s": 90.0}}}
    code, verdicts = run_gate(tmp_path, capsys, fast, slow)
    assert code == 0
    assert verdicts["train_time.json:images_per_s"] == "info"
    assert verdicts["attack_time.json:pgd.seconds"] == "info"
    assert verdicts["test.json:accuracy"] == "ok"


def test_missing_timing_is_reported_not_failed_while_a_missing_metric_fails(tmp_path, capsys):
    timed = {**REPRODUCIBLE, "test_time.json": {"seconds": 1.0, "images_per_s": 1000.0}}
    code, verdicts = run_gate(tmp_path, capsys, timed, REPRODUCIBLE)
    assert (code, verdicts["test_time.json:seconds"]) == (0, "info")

    code, verdicts = run_gate(tmp_path / "2", capsys, timed,
                              {**timed, "test.json": {}})
    assert (code, verdicts["test.json:accuracy"]) == (1, "MISSING")
