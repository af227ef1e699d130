"""params.yaml survives every rewrite DVC makes: an experiment applied to the workspace, then
any `-S` (a list set to [] and back, a scalar, a nested section) leaves valid YAML holding the
values set. Every key of params.yaml goes through DVC's own writer (the one `dvc exp run -S`
calls), in process; one `dvc exp run` checks the whole path. The layout rule these enforce is
written at the top of params.yaml."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import COMMITTED_PARAMS, copy_repo, repo_env
from dvc.utils.hydra import apply_overrides

from advlab.experiments.profile import flatten
from advlab.params import load_params

PARAMS = yaml.safe_load(COMMITTED_PARAMS)


def override(key: str, value: object) -> str:
    """`key=value` in DVC's (Hydra's) override grammar: JSON values, {k:v} for a section."""
    if isinstance(value, dict):
        return f"{key}={{{','.join(f'{k}:{json.dumps(v)}' for k, v in value.items())}}}"
    return f"{key}={json.dumps(value)}"


def another(value: object) -> object:
    """A different value of the kind a user sets: [] for a list, a number for null."""
    if isinstance(value, dict):
        return {key: another(v) for key, v in value.items()}
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, list):
        return []
    return 7 if value is None else f"{value}x"


def nested_sections(tree: dict, prefix: str = "") -> dict[str, dict]:
    """attack.pgd and the like: sections inside a section, holding values only."""
    found = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            if prefix and not any(isinstance(v, dict) for v in value.values()):
                found[prefix + key] = value
            found.update(nested_sections(value, f"{prefix}{key}."))
    return found


def with_value(tree: dict, key: str, value: object) -> dict:
    changed = copy.deepcopy(tree)
    *parents, last = key.split(".")
    node = changed
    for name in parents:
        node = node[name]
    node[last] = value
    return changed


def rewrite(path: Path, key: str, value: object) -> dict:
    """DVC's -S writer on path; returns what the file then holds (fails on invalid YAML)."""
    apply_overrides(path, [override(key, value)])
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        pytest.fail(f"-S {override(key, value)} left invalid YAML: {str(err).splitlines()[0]}\n"
                    f"{path.read_text()}")


KEYS = {**flatten(PARAMS), **nested_sections(PARAMS)}
LISTS_AND_SECTIONS = [k for k, v in KEYS.items() if isinstance(v, list | dict)]


@pytest.fixture(scope="module")
def applied(tmp_path_factory) -> Path:
    """params.yaml as DVC leaves it after an experiment that set every key (flow lists become
    block lists), as `python -m advlab.experiments.profile ci` in a fresh clone does."""
    path = tmp_path_factory.mktemp("applied") / "params.yaml"
    path.write_text(COMMITTED_PARAMS)
    apply_overrides(path, [override(k, v) for k, v in flatten(PARAMS).items()])
    assert yaml.safe_load(path.read_text()) == PARAMS
    return path


def set_and_back(start: str, work: Path, key: str) -> None:
    work.write_text(start)
    changed = another(KEYS[key])
    assert rewrite(work, key, changed) == with_value(PARAMS, key, changed)
    assert rewrite(work, key, KEYS[key]) == PARAMS


@pytest.mark.parametrize("key", KEYS)
def test_any_key_set_after_an_applied_experiment_leaves_valid_yaml(applied, tmp_path, key):
    set_and_back(applied.read_text(), tmp_path / "params.yaml", key)


@pytest.mark.parametrize("key", LISTS_AND_SECTIONS)
def test_lists_and_sections_set_on_the_committed_file_leave_valid_yaml(tmp_path, key):
    set_and_back(COMMITTED_PARAMS, tmp_path / "params.yaml", key)


@pytest.mark.slow
def test_dvc_exp_run_sets_ensemble_to_none_after_the_ci_profile(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    ci = flatten(yaml.safe_load((repo / "profiles/ci.yaml").read_text()))
    apply_overrides(repo / "params.yaml", [override(k, v) for k, v in ci.items()])  # as
    # `python -m advlab.experiments.profile ci` leaves the workspace file (DVC's writer, in process)
    done = subprocess.run([sys.executable, "-m", "dvc", "exp", "run", "download", "-S",
                           "attack.ensemble=[]"], cwd=repo, env=repo_env(repo),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    params = load_params(repo / "params.yaml")
    assert params.attack.ensemble == () and params.data.dataset == "synthetic"
