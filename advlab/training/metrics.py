"""The train stage's metrics files, rewritten after every epoch so a running experiment shows
its last finished epoch in `dvc exp show` and `dvc plots show`.

Each write is atomic, and the files after the last epoch are the same as if written once at
the end: train.csv has a row per epoch, train.json the last epoch and the best so far.
"""

from __future__ import annotations

from pathlib import Path

from advlab.core.io import write_csv, write_json
from advlab.core.timing import throughput
from advlab.training.loop import EpochResult, best_epoch


def write_train_metrics(folder: Path, history: list[EpochResult], extra: dict[str, object],
                        train_images: int, environment: dict[str, str],
                        keep: str = "last") -> None:
    """train.csv, train.json (with `extra`: model size, adversarial mode) and train_time.json
    (with the `environment`, advlab.core.environment).

    Without validation (data.val_size 0) neither has val_acc (nor best_val_acc); with robust
    validation both gain robust_val_acc (and train.json best_robust_val_acc); with train.keep
    other than last, train.json names the kept epoch (what models/model.pt holds)."""
    last = history[-1]
    validated, robust = last.val_acc is not None, last.robust_val_acc is not None
    columns = ["val_acc"] * validated + ["robust_val_acc"] * robust
    write_csv(folder / "train.csv", ["epoch", "loss", *columns],
              [(r.epoch, round(r.loss, 6), *(round(getattr(r, c), 6) for c in columns))
               for r in history])
    metrics: dict[str, object] = {"epochs": last.epoch, "loss": round(last.loss, 6)}
    if validated:
        metrics["val_acc"] = round(last.val_acc, 6)
        metrics["best_val_acc"] = round(max(r.val_acc for r in history), 6)
    if robust:
        metrics["robust_val_acc"] = round(last.robust_val_acc, 6)
        metrics["best_robust_val_acc"] = round(max(r.robust_val_acc for r in history), 6)
    if keep != "last":
        metrics["kept_epoch"] = best_epoch(history, keep)
    write_json(folder / "train.json", {**metrics, **extra})
    seconds = sum(r.seconds for r in history)  # restored epochs keep their own time
    write_json(folder / "train_time.json",
               {**throughput(seconds, train_images * len(history)),
                "epoch_seconds": round(seconds / len(history), 3), "environment": environment})
