"""The train stage's metrics, rewritten after every epoch so a running experiment shows its
last finished epoch in `dvc exp show`, `dvc plots show`, DVC Studio and VS Code.

In the stage's metrics folder (`metrics/`):

- `train/`, DVCLive's folder (advlab.training.live writes it): `plots/metrics/NAME.tsv`, a
  row per epoch (step = the epoch, from 1) for loss, val_acc and robust_val_acc, and
  `params.yaml`, the settings the run resolved (device, precision, processes);
- `train.json`, DVCLive's summary: the last epoch's values, the best so far, `step` (the
  epochs done), model size, adversarial mode and the kept epoch; written atomically;
- `train_time.json`, written here: wall time, images/s and the environment. It is apart from
  train.json because it measures the machine, never the code (the gate only reports it).

After the last epoch the files are the same as if written once at the end. This module holds
their layout and reads them back (the report, advlab.experiments.compare) without DVCLive.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from advlab.core.errors import MissingInputError
from advlab.core.io import write_json
from advlab.core.timing import throughput

if TYPE_CHECKING:  # not imported: the report stage reads the curves without the training code
    from advlab.training.loop import EpochResult

LIVE_FOLDER = "train"  # DVCLive's folder, inside the metrics folder
SUMMARY = "train.json"  # its summary, beside that folder
CURVES = ("loss", "val_acc", "robust_val_acc")  # per epoch, where the run has them
CURVES_FOLDER = Path("plots/metrics")  # where DVCLive puts a metric's .tsv, inside its folder


def curves_folder(metrics: Path) -> Path:
    return metrics / LIVE_FOLDER / CURVES_FOLDER


def write_train_time(folder: Path, history: list[EpochResult], train_images: int,
                     environment: dict[str, str]) -> None:
    """train_time.json: the epochs' wall time, images/s and the `environment`
    (advlab.core.environment)."""
    seconds = sum(r.seconds for r in history)  # restored epochs keep their own time
    write_json(folder / "train_time.json",
               {**throughput(seconds, train_images * len(history)),
                "epoch_seconds": round(seconds / len(history), 3), "environment": environment})


def join_curves(tables: dict[str, str]) -> list[dict[str, float]]:
    """A row per epoch (epoch, then each curve) from DVCLive's tables, {name: the .tsv's text}."""
    rows: dict[int, dict[str, float]] = {}
    for name, text in tables.items():
        for row in csv.DictReader(text.splitlines(), delimiter="\t"):
            step = int(row["step"])
            rows.setdefault(step, {"epoch": step})[name] = float(row[name])
    return [rows[step] for step in sorted(rows)]


def read_file(path: Path) -> str | None:
    return path.read_text() if path.is_file() else None


def curve_tables(metrics: Path, read: Callable[[Path], str | None] = read_file
                 ) -> dict[str, str]:
    """{name: text} of the curves' .tsv files of the metrics folder `metrics`, those that `read`
    finds (by default in the workspace)."""
    folder = curves_folder(metrics)
    return {name: text for name in CURVES
            if (text := read(folder / f"{name}.tsv")) is not None}


def read_curves(metrics: Path) -> list[dict[str, float]]:
    """The train stage's per-epoch curves in the metrics folder `metrics` (see join_curves)."""
    tables = curve_tables(metrics)
    if "loss" not in tables:
        raise MissingInputError(f"{curves_folder(metrics) / 'loss.tsv'} does not exist: run the "
                                "train stage (dvc repro)")
    return join_curves(tables)
