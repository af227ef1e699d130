"""advlab.experiments.compare's output: the table as text that fits a terminal, as Markdown,
and one self-contained HTML page with the table and every experiment's curves as inline SVG
(vl-convert: the page needs no network)."""

from __future__ import annotations

import html
import json
import math

import pandas as pd
import vl_convert

from advlab.experiments.compare_read import Experiment, read_curves
from advlab.experiments.compare_table import attack_accuracy


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
    for i, name in enumerate(turned.columns):  # by position: two experiments may share a name
        need = max(len(str(name)), *(len(v) for v in turned.iloc[:, i])) + 2
        if current and used + need > width:
            chunks.append(current)
            current, used = [], label
        current.append(i)
        used += need
    chunks.append(current)
    return "\n\n".join(turned.iloc[:, chunk].to_string() for chunk in chunks)


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
