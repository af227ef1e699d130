"""Compare experiments at a glance: `python -m advlab.experiments.compare [EXP ...]`.

    python -m advlab.experiments.compare         # the workspace and the experiments of HEAD
    python -m advlab.experiments.compare lr-a lr-b --eps 0.1
    python -m advlab.experiments.compare --all --md        # every commit's experiments, as Markdown
    python -m advlab.experiments.compare --html compare.html --metrics-dir results/ci

Built on `dvc exp show --json`: a row per experiment with the params that differ between the
rows and the headline metrics: validation and test accuracy, accuracy under each attack
method (read from attack.json, whatever methods it holds) at each eps or at `--eps`, the
training time, and the environment a stage ran in (Python, torch, CUDA, device, dvc) where
the experiments differ in it. In a terminal the table fits `--width` columns (it is turned,
a row per metric, when the experiments do not fit side by side). `--html` writes one
self-contained page, with the table and the curves of every experiment overlaid, drawn to
inline SVG by vl-convert: the page needs no network.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import vl_convert

from advlab.core.io import write_text
from advlab.experiments.profile import flatten
from advlab.training.metrics import SUMMARY, curve_tables, join_curves, read_file

EPS_KEY = re.compile(r"^attack\.json:(?P<method>[^.]+)\.accuracy\.eps=(?P<eps>[-+.\deE]+)$")
HEADLINE = {"train.json:val_acc": "val_acc", "test.json:accuracy": "test_acc"}
TIMES = {"train_time.json:seconds": "train_s"}
ENVIRONMENT = re.compile(r"^(?P<stage>\w+)_time\.json:environment\.(?P<key>.+)$")


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


# --- reading -----------------------------------------------------------------------------------

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
        except (json.JSONDecodeError, AttributeError) as err:
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


# --- the table ---------------------------------------------------------------------------------

def attack_accuracy(exp: Experiment) -> dict[tuple[str, float], float]:
    """(method, eps) -> accuracy under attack, for every method attack.json holds."""
    found = {}
    for key, value in exp.metrics.items():
        if (m := EPS_KEY.match(key)) and isinstance(value, int | float):
            found[(m["method"], float(m["eps"]))] = value
    return found


def _short(value: object) -> object:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return value


def differing_params(exps: list[Experiment]) -> list[str]:
    """Params whose values differ between the experiments that have params (a row read from a
    folder of metrics files has none)."""
    with_params = [e for e in exps if e.params]
    keys = sorted({k for e in with_params for k in e.params})
    return [k for k in keys
            if len({json.dumps(e.params.get(k), sort_keys=True) for e in with_params}) > 1]


def differing_environment(exps: list[Experiment]) -> dict[str, str]:
    """FILE:key -> column label (`env.train.torch`) of each environment entry the stages
    recorded (advlab.core.environment) whose value differs between the experiments."""
    keys = sorted({k for e in exps for k in e.metrics if ENVIRONMENT.match(k)})
    return {k: "env.{stage}.{key}".format(**ENVIRONMENT.match(k).groupdict()) for k in keys
            if len({json.dumps(e.metrics.get(k)) for e in exps}) > 1}


def table(exps: list[Experiment], eps: float | None = None) -> pd.DataFrame:
    """A row per experiment: params that differ, val/test accuracy, attacks, training time,
    and the environment (Python, torch, device...) where it differs."""
    attacks = [attack_accuracy(e) for e in exps]
    pairs = sorted({pair for found in attacks for pair in found})
    if eps is not None:
        available = sorted({e for _, e in pairs})
        pairs = [(m, e) for m, e in pairs if math.isclose(e, eps)]
        if not pairs:
            raise CompareError(f"no attack at eps {eps:g}; the experiments have eps "
                               f"{', '.join(f'{e:g}' for e in available) or 'none'}")
    params, environment = differing_params(exps), differing_environment(exps)
    rows = []
    for exp, found in zip(exps, attacks, strict=True):
        row: dict[str, object] = {k: _short(exp.params.get(k)) for k in params}
        row.update({label: exp.metrics.get(key) for key, label in HEADLINE.items()})
        row.update({f"{m}@{e:g}": found.get((m, e)) for m, e in pairs})
        row.update({label: exp.metrics.get(key) for key, label in TIMES.items()})
        row.update({label: exp.metrics.get(key) for key, label in environment.items()})
        rows.append(row)
    frame = pd.DataFrame(rows, index=pd.Index([e.name for e in exps], name="experiment"))
    return frame.dropna(axis=1, how="all")


def _cell(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _cells(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype(object).map(_cell)


def to_text(frame: pd.DataFrame, width: int = 100) -> str:
    """Experiments as rows if they fit in `width`, else a row per column, in chunks of
    experiments that fit side by side."""
    cells = _cells(frame)
    wide = cells.reset_index().to_string(index=False)
    if max(len(line) for line in wide.splitlines()) <= width:
        return wide
    turned = cells.T
    label = max(len(str(c)) for c in turned.index) + 2
    chunks, current, used = [], [], label
    for name in turned.columns:
        need = max(len(str(name)), *(len(v) for v in turned[name])) + 2
        if current and used + need > width:
            chunks.append(current)
            current, used = [], label
        current.append(name)
        used += need
    chunks.append(current)
    return "\n\n".join(turned[chunk].to_string() for chunk in chunks)


def to_markdown(frame: pd.DataFrame) -> str:
    cells = _cells(frame)
    header = [frame.index.name or "", *map(str, cells.columns)]
    lines = [header, ["---"] * len(header),
             *([str(name), *row] for name, row in zip(cells.index, cells.values.tolist(),
                                                      strict=True))]
    return "\n".join("| " + " | ".join(c.replace("|", "\\|") for c in line) + " |"
                     for line in lines)


# --- the page ----------------------------------------------------------------------------------

def curves(exps: list[Experiment]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-epoch loss and val_acc, accuracy per method and eps), a row per point."""
    epochs = []
    for exp in exps:
        if rows := read_curves(exp):
            epochs.append(pd.DataFrame(rows).assign(experiment=exp.name))
    attack = pd.DataFrame([{"experiment": exp.name, "method": m, "epsilon": e, "accuracy": a}
                           for exp in exps for (m, e), a in attack_accuracy(exp).items()])
    return (pd.concat(epochs, ignore_index=True) if epochs else pd.DataFrame()), attack


def chart(data: pd.DataFrame, x: str, y: str, title: str, dash: str | None = None) -> str:
    """A line chart, a colour per experiment (and a dash per `dash`), as SVG."""
    encoding: dict[str, object] = {
        "x": {"field": x, "type": "quantitative",
              **({"axis": {"tickMinStep": 1, "format": "d"}} if x == "epoch" else {})},
        "y": {"field": y, "type": "quantitative", "scale": {"zero": False}},
        "color": {"field": "experiment", "type": "nominal"},
        "tooltip": [{"field": c} for c in data.columns]}
    if dash:
        encoding["strokeDash"] = {"field": dash, "type": "nominal"}
    spec = {"$schema": "https://vega.github.io/schema/vega-lite/v5.json", "title": title,
            "width": 420, "height": 260, "data": {"values": json.loads(data.to_json(
                orient="records"))},
            # points would turn the dash legend into dots
            "mark": {"type": "line", "point": not dash}, "encoding": encoding}
    return vl_convert.vegalite_to_svg(spec)


def to_html(frame: pd.DataFrame, exps: list[Experiment]) -> str:
    epochs, attack = curves(exps)
    svgs = []
    if not epochs.empty:
        svgs.append(chart(epochs, "epoch", "loss", "Training loss per epoch"))
    if "val_acc" in epochs:  # absent when no experiment validates (data.val_size 0)
        svgs.append(chart(epochs, "epoch", "val_acc", "Validation accuracy per epoch"))
    if not attack.empty:
        svgs.append(chart(attack, "epsilon", "accuracy",
                          "Accuracy under attack (line dash: method)", dash="method"))
    figures = "\n".join(f"<figure>{svg}</figure>" for svg in svgs)
    cells = _cells(frame)
    if len(cells.columns) > len(cells):  # few experiments, many metrics: a row per metric
        cells = cells.T
    return f"""<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<title>advlab: {html.escape(', '.join(e.name for e in exps))}</title>
<style>
  body {{ font-family: sans-serif; margin: 1.5em; }}
  table {{ border-collapse: collapse; }}
  th, td {{ padding: 0.25em 0.7em; text-align: right; border-bottom: 1px solid #ddd; }}
  figure {{ display: inline-block; margin: 0.5em; }}
</style>
</head>
<body>
<h1>Experiments</h1>
{cells.to_html(escape=True)}
<h2>Curves</h2>
{figures}
</body>
</html>
"""


# --- the command -------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiments", nargs="*", metavar="EXP",
                        help="experiment names or revs (default: all that `dvc exp show` lists)")
    parser.add_argument("--all", action="store_true",
                        help="the experiments of every commit (dvc exp show --all-commits)")
    parser.add_argument("--eps", type=float, help="attack accuracy at this eps only")
    parser.add_argument("--metrics-dir", type=Path, action="append", default=[], metavar="DIR",
                        help="add a row from a folder of metrics files, e.g. results/ci")
    parser.add_argument("--md", action="store_true", help="print the table as Markdown")
    parser.add_argument("--html", type=Path, metavar="FILE",
                        help="also write a self-contained page with the curves")
    parser.add_argument("--width", type=int, default=shutil.get_terminal_size((100, 24)).columns,
                        help="terminal columns for the table (default: the terminal's)")
    args = parser.parse_args(argv)
    try:
        exps = select(experiments_of(exp_show(args.all)), args.experiments)
        exps += [from_folder(folder) for folder in args.metrics_dir]
        if not exps:
            raise CompareError("no experiment holds metrics: run `dvc exp run` first")
        frame = table(exps, args.eps)
        print(to_markdown(frame) if args.md else to_text(frame, args.width))
        if args.html:
            write_text(args.html, to_html(frame, exps))
            print(f"compare: wrote {args.html}", file=sys.stderr)
    except CompareError as err:
        print(f"compare: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
