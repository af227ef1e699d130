"""The regression gate: verdicts on small metrics files, and a really worsened run failing it."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import yaml
from conftest import run_stage_script

from advlab.experiments.gate import Rule, judge, load_spec, main
from advlab.experiments.profile import deep_merge

REPO = Path(__file__).resolve().parents[1]

SPEC = """
metrics:
  "test.json:accuracy":    {better: higher, abs: 0.02}
  "train.json:loss":       {better: lower, abs: 0.05, rel: 0.1}
  "train.json:epochs":     {better: equal}
  "attack.json:*accuracy": {better: higher, abs: 0.03}
"""

BASELINE = {
    "test.json": {"accuracy": 0.90, "per_class": {"cat": 0.8}},
    "train.json": {"loss": 0.5, "epochs": 2},
    "attack.json": {"0.1": {"accuracy": 0.40}},
}


def write_metrics(folder: Path, files: dict[str, object]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_text(json.dumps(data))
    return folder


def changed(edits: dict[tuple[str, ...], object]) -> dict[str, object]:
    """BASELINE with each (file, key, ..., key) set to a value, or deleted where it is None."""
    files = json.loads(json.dumps(BASELINE))
    for (*parents, leaf), value in edits.items():
        node = files
        for part in parents:
            node = node[part]
        if value is None:
            del node[leaf]
        else:
            node[leaf] = value
    return files


@pytest.fixture
def gate(tmp_path, capsys):
    """Runs the gate on BASELINE vs the given files; returns (exit code, stdout, stderr)."""
    spec = tmp_path / "gate.yaml"
    spec.write_text(SPEC)
    baseline = write_metrics(tmp_path / "baseline", BASELINE)

    def run(files: dict[str, object], base: Path = baseline) -> tuple[int, str, str]:
        current = write_metrics(tmp_path / "current", files)
        code = main(["--baseline", str(base), "--current", str(current), "--spec", str(spec)])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def cells(out: str, metric: str) -> list[str]:
    return next(re.split(r"\s{2,}", line) for line in out.splitlines()
                if line.split()[:1] == [metric])


def verdict(out: str, metric: str) -> str:
    return cells(out, metric)[-1]


def test_identical_metrics_pass(gate):
    code, out, _ = gate(BASELINE)
    assert code == 0
    assert "gate: pass" in out
    assert verdict(out, "test.json:accuracy") == "ok"


def test_table_shows_baseline_current_change_allowed_verdict(gate):
    code, out, _ = gate(changed({("test.json", "accuracy"): 0.85}))
    header, *rows = out.splitlines()
    assert header.split() == ["metric", "baseline", "current", "change", "allowed", "verdict"]
    assert cells(out, "test.json:accuracy") == ["test.json:accuracy", "0.9", "0.85", "-0.05",
                                                 "-0.02", "REGRESSED"]
    assert code == 1 and "gate: FAIL" in out


def test_a_drop_within_tolerance_passes(gate):
    code, out, _ = gate(changed({("test.json", "accuracy"): 0.89}))
    assert (code, verdict(out, "test.json:accuracy")) == (0, "ok")


def test_an_improvement_beyond_tolerance_passes_and_is_reported(gate):
    code, out, _ = gate(changed({("test.json", "accuracy"): 0.95, ("train.json", "loss"): 0.3}))
    assert code == 0
    assert verdict(out, "test.json:accuracy") == "improved"
    assert verdict(out, "train.json:loss") == "improved"


def test_lower_is_better_allows_abs_plus_rel_of_the_baseline(gate):
    # allowed rise: 0.05 + 0.1 * 0.5 = 0.10
    assert gate(changed({("train.json", "loss"): 0.59}))[0] == 0
    code, out, _ = gate(changed({("train.json", "loss"): 0.61}))
    assert (code, verdict(out, "train.json:loss")) == (1, "REGRESSED")


@pytest.mark.parametrize("epochs", [3, 1])
def test_equal_fails_on_any_change(gate, epochs):
    code, out, _ = gate(changed({("train.json", "epochs"): epochs}))
    assert (code, verdict(out, "train.json:epochs")) == (1, "REGRESSED")


def test_glob_rule_judges_nested_attack_accuracy(gate):
    code, out, _ = gate(changed({("attack.json", "0.1", "accuracy"): 0.30}))
    assert (code, verdict(out, "attack.json:0.1.accuracy")) == (1, "REGRESSED")


def test_nan_is_a_regression():
    rule = Rule("x", "lower", abs=1.0)
    assert judge(rule, 0.5, math.nan) == "REGRESSED"
    assert judge(Rule("x", "higher", abs=1.0), 0.5, math.nan) == "REGRESSED"


def test_a_metric_that_disappeared_fails_even_without_a_rule(gate):
    code, out, _ = gate(changed({("test.json", "per_class", "cat"): None}))
    assert (code, verdict(out, "test.json:per_class.cat")) == (1, "MISSING")


def test_a_missing_metric_file_fails(gate):
    files = changed({})
    del files["attack.json"]
    code, out, _ = gate(files)
    assert (code, verdict(out, "attack.json:0.1.accuracy")) == (1, "MISSING")


def test_a_metric_the_spec_names_must_exist_even_if_the_baseline_lacks_it(gate, tmp_path):
    without = changed({("test.json", "accuracy"): None})
    code, out, _ = gate(without, write_metrics(tmp_path / "without", without))
    assert (code, verdict(out, "test.json:accuracy")) == (1, "MISSING")


def test_new_and_unspecified_metrics_are_reported_not_failed(gate):
    code, out, _ = gate(changed({("test.json", "f1"): 0.7,
                                 ("attack.json", "0.2"): {"accuracy": 0.2}}))
    assert code == 0
    assert verdict(out, "test.json:f1") == "new"
    assert verdict(out, "attack.json:0.2.accuracy") == "new"
    assert verdict(out, "test.json:per_class.cat") == "not in spec"


def test_a_rule_matching_no_metric_is_noted_not_failed(gate, tmp_path):
    files = changed({})
    del files["attack.json"]
    code, out, _ = gate(files, write_metrics(tmp_path / "no-attack", files))
    assert code == 0
    assert "no metric matches the rule 'attack.json:*accuracy'" in out


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", ""])
def test_an_unreadable_file_fails_with_its_path(gate, tmp_path, content):
    write_metrics(tmp_path / "current", BASELINE)
    (tmp_path / "current" / "test.json").write_text(content)
    code, out, err = gate({})
    assert code == 2
    assert "test.json" in err and out == ""


@pytest.mark.parametrize("files", [{}, {"test.json": {"note": "text only"}}])
def test_a_baseline_without_metrics_is_an_error_not_a_pass(gate, tmp_path, files):
    """Against an empty (or wrong) baseline folder every metric would be new, and pass."""
    code, out, err = gate(BASELINE, write_metrics(tmp_path / "empty", files))
    assert (code, out) == (2, "")
    assert err == f"gate: error: {tmp_path / 'empty'}/ holds no metrics (no number in any *.json)\n"


def test_a_malformed_spec_fails(tmp_path, capsys):
    spec = tmp_path / "gate.yaml"
    spec.write_text('metrics:\n  "test.json:accuracy": {better: up}\n')
    with pytest.raises(Exception, match="better must be one of"):
        load_spec(spec)
    write_metrics(tmp_path / "m", BASELINE)
    assert main(["--baseline", str(tmp_path / "m"), "--current", str(tmp_path / "m"),
                 "--spec", str(spec)]) == 2


def test_the_committed_spec_passes_the_committed_baseline_against_itself(capsys):
    baseline = REPO / "results" / "ci"
    code = main(["--baseline", str(baseline), "--current", str(baseline),
                 "--spec", str(REPO / "gate.yaml")])
    assert code == 0, capsys.readouterr().out


# A really worsened run: the stage scripts (in this process, to import torch once) on tiny
# synthetic data, once with the default learning rate and once with one far too high. With the
# committed spec, the gate passes the normal run against itself and fails the worsened one.

TINY = {
    "base": {"device": "cpu"},
    "data": {"dataset": "synthetic", "synthetic_train": 700, "synthetic_test": 300,
             "train_size": 500, "val_size": 200},
    "train": {"epochs": 1},
}


def write_params(workdir: Path, overrides: dict) -> None:
    defaults = yaml.safe_load((REPO / "params.yaml").read_text())
    (workdir / "params.yaml").write_text(yaml.safe_dump(deep_merge(defaults, overrides)))


def train_and_test(monkeypatch: pytest.MonkeyPatch, workdir: Path, lr: float) -> Path:
    write_params(workdir, deep_merge(TINY, {"train": {"lr": lr}}))
    metrics, model = f"metrics-lr{lr}", f"model-lr{lr}.pt"
    common = ("--splits", "splits", "--model", model, "--metrics", metrics)
    run_stage_script(monkeypatch, "train.py", *common, "--tensorboard", f"tb-train-lr{lr}",
              "--checkpoint", f"checkpoint-lr{lr}.pt")
    run_stage_script(monkeypatch, "test.py", *common, "--tensorboard", f"tb-test-lr{lr}")
    return workdir / metrics


def test_a_run_with_a_far_too_high_learning_rate_fails_the_gate(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, TINY)
    run_stage_script(monkeypatch, "download.py", "--out", "raw")
    run_stage_script(monkeypatch, "split.py", "--raw", "raw", "--out", "splits")
    normal = train_and_test(monkeypatch, tmp_path, 0.001)
    worse = train_and_test(monkeypatch, tmp_path, 10.0)
    spec = str(REPO / "gate.yaml")

    assert main(["--baseline", str(normal), "--current", str(normal), "--spec", spec]) == 0
    capsys.readouterr()
    assert main(["--baseline", str(normal), "--current", str(worse), "--spec", spec]) == 1
    out = capsys.readouterr().out
    assert verdict(out, "test.json:accuracy") == "REGRESSED", out
    assert verdict(out, "train.json:val_acc") == "REGRESSED", out
