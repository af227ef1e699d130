"""The experiments advlab.experiments.compare compares: read from `dvc exp show --json` (the
workspace, each commit, each experiment), or from a folder of metrics files (results/ci), with
their per-epoch curves from the train stage's DVCLive files."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from advlab.experiments.profile import flatten
from advlab.training.metrics import SUMMARY, curve_tables, join_curves, read_file


class CompareError(Exception):
    """dvc failed, or the experiments asked for do not exist or hold no metrics."""


@dataclass
class Experiment:
    name: str
    params: dict[str, object]  # dotted key (FILE:key for files other than params.yaml) -> value
    metrics: dict[str, object]  # FILE:dotted key, FILE the metrics file's name (as the gate)
    curves: list[dict[str, float]] | None = None  # per epoch: epoch, loss, val_acc...
    rev: str = ""  # the git commit, "" for the workspace and folders
    source: dict[str, str] = field(default_factory=dict)  # metrics file name -> its path


def exp_show(all_commits: bool = False) -> list[dict]:
    command = ["dvc", "exp", "show", "--json", *(["--all-commits"] if all_commits else [])]
    try:
        done = subprocess.run(command, capture_output=True, text=True)
    except OSError as err:
        raise CompareError(f"cannot run dvc: {err}") from None
    if done.returncode != 0:
        raise CompareError(f"{' '.join(command)} failed: {done.stderr.strip()}")
    return json.loads(done.stdout or "[]")


def _values(data: dict | None, kind: str) -> dict[str, dict]:
    """{file: its data} of an entry's params or metrics, skipping files DVC could not read."""
    return {path: (content or {}).get("data") or {}
            for path, content in ((data or {}).get(kind) or {}).items()}


def from_entry(name: str, entry: dict) -> Experiment:
    data = entry.get("data") or {}
    params: dict[str, object] = {}
    for path, values in _values(data, "params").items():
        prefix = "" if path == "params.yaml" else f"{path}:"
        params.update({f"{prefix}{k}": v for k, v in flatten(values).items()})
    metrics: dict[str, object] = {}
    source: dict[str, str] = {}
    for path, values in _values(data, "metrics").items():
        source[Path(path).name] = path
        metrics.update({f"{Path(path).name}:{k}": v for k, v in flatten(values).items()})
    rev = "" if entry.get("rev") == "workspace" else entry.get("rev", "")
    return Experiment(name, params, metrics, rev=rev, source=source)


def experiments_of(shown: list[dict]) -> list[Experiment]:
    """Every entry of `dvc exp show --json`: the workspace, each commit, each experiment."""
    found = []
    for entry in shown:
        rev = entry.get("rev", "")
        found.append(from_entry(entry.get("name") or ("workspace" if rev == "workspace"
                                                      else rev[:7]), entry))
        for group in entry.get("experiments") or []:
            for exp in group.get("revs") or []:
                found.append(from_entry(exp.get("name") or group.get("name")
                                        or exp["rev"][:7], exp))
    return found


def select(found: list[Experiment], wanted: Sequence[str]) -> list[Experiment]:
    """The experiments named (by name or a rev prefix), in that order; by default all that
    hold metrics, less the workspace where it is an experiment applied to it (the same params
    and metrics). One named that is absent is an error listing those there are."""
    if not wanted:
        held = [e for e in found if e.metrics]
        return [e for e in held if e.rev or e.name != "workspace" or not any(
            (o.params, o.metrics) == (e.params, e.metrics) for o in held if o is not e)]
    chosen = []
    for name in wanted:
        match = next((e for e in found if name == e.name
                      or (len(name) >= 4 and e.rev.startswith(name))), None)
        if match is None:
            known = ", ".join(e.name for e in found) or "none"
            raise CompareError(f"no experiment {name!r}; dvc exp show lists: {known}")
        chosen.append(match)
    return chosen


def distinct_names(exps: list[Experiment]) -> list[Experiment]:
    """The experiments, a name several share preceded by each one's short rev, as `dvc exp show`
    prints it (`be0a88a [ci-a]`): a name is unique per commit only, so with --all two commits'
    experiments may share one, and the table and the charts would not tell them apart."""
    shared = {name for name, count in Counter(e.name for e in exps).items() if count > 1}
    return [replace(e, name=f"{e.rev[:7]} [{e.name}]") if e.name in shared and e.rev else e
            for e in exps]


def from_folder(folder: Path) -> Experiment:
    """A row from a folder of metrics files (e.g. results/ci, the committed CI baseline)."""
    files = sorted(folder.glob("*.json"))
    if not files:
        raise CompareError(f"{folder}/ holds no metrics files (*.json)")
    metrics: dict[str, object] = {}
    for path in files:
        try:
            metrics.update({f"{path.name}:{k}": v
                            for k, v in flatten(json.loads(path.read_text())).items()})
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as err:
            raise CompareError(f"{path} is not a JSON object of metrics ({err})") from None
    tables = curve_tables(folder)
    return Experiment(f"{folder}", {}, metrics, join_curves(tables) if tables else None)


def file_at(rev: str, path: Path) -> str | None:
    """A file's text at a git commit, or in the workspace for rev ""; None where it is absent."""
    if not rev:
        return read_file(path)
    done = subprocess.run(["git", "show", f"{rev}:{path.as_posix()}"], capture_output=True,
                          text=True)
    return done.stdout if done.returncode == 0 else None


def read_curves(exp: Experiment) -> list[dict[str, float]] | None:
    """The per-epoch curves DVCLive wrote beside train.json: from the experiment's commit, or
    the workspace's files."""
    if exp.curves is not None or SUMMARY not in exp.source:
        return exp.curves
    tables = curve_tables(Path(exp.source[SUMMARY]).parent, lambda path: file_at(exp.rev, path))
    return join_curves(tables) if tables else None
