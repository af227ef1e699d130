"""A profile means the committed params.yaml plus the profile's keys, whatever earlier
experiments left in the workspace file, unless --on-workspace asks to build on it.

`dvc exp run` is replaced here by what it does to params.yaml (apply each `-S key=value`);
tests/test_pipeline_dvc.py runs profiles through the real one."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import COMMITTED_PARAMS
from dvc.utils.hydra import apply_overrides

from advlab.experiments import profile
from advlab.experiments.profile import deep_merge

ROOT = Path(__file__).resolve().parents[1]


def apply_settings(args: list[str], params: Path = Path("params.yaml")) -> None:
    """What `dvc exp run -S key=value ...` does to the workspace params.yaml."""
    tree = yaml.safe_load(params.read_text())
    for flag, setting in zip(args, args[1:], strict=False):
        if flag == "-S":
            key, value = setting.split("=", 1)
            *sections, last = key.split(".")
            node = tree
            for section in sections:
                node = node[section]
            node[last] = yaml.safe_load(value)
    params.write_text(yaml.safe_dump(tree, sort_keys=False))


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A git repository holding the committed params.yaml and profiles/, as the cwd, with
    `dvc exp run` replaced by its effect on params.yaml."""
    (tmp_path / "params.yaml").write_text(COMMITTED_PARAMS)
    shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "defaults"]):
        subprocess.run([*git, *command], cwd=tmp_path, check=True, capture_output=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(profile.subprocess, "call",
                        lambda command: apply_settings(command[3:]) or 0)
    return tmp_path


def params() -> dict:
    return yaml.safe_load(Path("params.yaml").read_text())


def expected(name: str) -> dict:
    committed = yaml.safe_load(COMMITTED_PARAMS)
    return deep_merge(committed, yaml.safe_load((ROOT / f"profiles/{name}.yaml").read_text()))


def test_two_profiles_in_a_row_the_second_gets_the_committed_defaults(repo, capsys):
    assert profile.main(["synthetic"]) == 0
    assert params() == expected("synthetic")
    assert "differs from the committed one" not in capsys.readouterr().out
    apply_settings(["-S", "train.lr=0.003"])  # an experiment of the user's in between

    assert profile.main(["fashion_mnist"]) == 0
    assert params() == expected("fashion_mnist")
    assert params()["train"]["epochs"] == 10 and params()["train"]["lr"] == 0.001
    note = capsys.readouterr().out.splitlines()[0]
    assert note.startswith("profile: workspace params.yaml differs from the committed one: ")
    assert "train.lr=0.003" in note and "train.epochs=3" in note and "set aside" in note


def test_on_workspace_builds_on_what_the_workspace_holds_and_says_so(repo, capsys):
    apply_settings(["-S", "train.lr=0.003"])
    assert profile.main(["ci", "--on-workspace"]) == 0
    assert params() == deep_merge(expected("ci"), {"train": {"lr": 0.003}})
    assert "train.lr=0.003; kept (--on-workspace)" in capsys.readouterr().out


def test_keys_the_caller_sets_win(repo):
    apply_settings(["-S", "train.lr=0.003"])
    assert profile.main(["ci", "-S", "train.lr=0.01"]) == 0
    assert params() == deep_merge(expected("ci"), {"train": {"lr": 0.01}})


def test_a_bad_profile_value_is_one_line_and_runs_nothing(repo, capsys, monkeypatch):
    Path("profiles/bad.yaml").write_text("train:\n  lr: -1\n")
    monkeypatch.setattr(profile.subprocess, "call", pytest.fail)
    assert profile.main(["bad"]) == 1
    assert capsys.readouterr().err == (
        "profile: error: profiles/bad.yaml: params: train.lr = -1 is not allowed; "
        "expected a finite number > 0\n")


def test_save_copies_the_metrics_files_and_dvclive_folder_as_the_baseline_holds_them(tmp_path):
    """`--save DIR` (.ci/baseline): results/ci's layout, from a metrics folder."""
    metrics = tmp_path / "metrics"
    baseline = ROOT / "results" / "ci"
    shutil.copytree(baseline, metrics)
    (metrics / ".gitkeep").touch()
    profile.save_metrics(metrics, tmp_path / "saved")
    files = sorted(p.relative_to(baseline).as_posix() for p in baseline.rglob("*") if p.is_file())
    assert "train/plots/metrics/loss.tsv" in files and "train.json" in files
    assert sorted(p.relative_to(tmp_path / "saved").as_posix()
                  for p in (tmp_path / "saved").rglob("*") if p.is_file()) == files


def test_a_normalize_mapping_an_experiment_left_is_set_back(repo, monkeypatch):
    """model.normalize holds a mapping or null: the profile sets it back as one value, in the
    grammar DVC's own writer reads."""
    normalize = "model.normalize={mean:[0.5,0.5,0.5],std:[0.25,0.25,0.25]}"
    apply_overrides(Path("params.yaml"), [normalize, "model.file=robust.pt"])
    monkeypatch.setattr(profile.subprocess, "call", lambda command: apply_overrides(
        Path("params.yaml"), [s for f, s in zip(command, command[1:], strict=False)
                              if f == "-S"]) or 0)
    assert profile.main(["ci"]) == 0
    assert params() == expected("ci")
    assert profile.set_args({"model.normalize": {"mean": [0.5], "std": [0.25]}}) == [
        "-S", "model.normalize={mean:[0.5],std:[0.25]}"]
