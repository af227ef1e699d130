"""The train stage's metrics files, rewritten after every epoch so a running experiment shows
its last finished epoch in `dvc exp show` and `dvc plots show`.

Each write is atomic, and the files after the last epoch are the same as if written once at
the end: train.csv has a row per epoch, train.json the last epoch and the best so far.
"""

from __future__ import annotations

from pathlib import Path

from advlab.io import write_csv, write_json
from advlab.timing import throughput
from advlab.train import EpochResult


def write_train_metrics(folder: Path, history: list[EpochResult], extra: dict[str, object],
                        train_images: int, environment: dict[str, str]) -> None:
    """train.csv, train.json (with `extra`: model size, adversarial mode) and train_time.json
    (with the `environment`, advlab.environment)."""
    write_csv(folder / "train.csv", ["epoch", "loss", "val_acc"],
              [(r.epoch, round(r.loss, 6), round(r.val_acc, 6)) for r in history])
    last = history[-1]
    write_json(folder / "train.json", {
        "epochs": last.epoch, "loss": round(last.loss, 6), "val_acc": round(last.val_acc, 6),
        "best_val_acc": round(max(r.val_acc for r in history), 6), **extra,
    })
    seconds = sum(r.seconds for r in history)  # restored epochs keep their own time
    write_json(folder / "train_time.json",
               {**throughput(seconds, train_images * len(history)),
                "epoch_seconds": round(seconds / len(history), 3), "environment": environment})
