"""Wall time and throughput of a stage's work, kept apart from the metrics that must reproduce.

A stage writes them to metrics/STAGE_time.json: `dvc exp show` and `advlab.experiments.compare`
show them, and the regression gate reports them without judging (they depend on the machine).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


class Stopwatch:
    """`with Stopwatch(device) as watch: ...` then `watch.seconds`; waits for queued GPU work."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds = 0.0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __enter__(self) -> Stopwatch:
        self._sync()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sync()
        self.seconds = time.perf_counter() - self._start


def throughput(seconds: float, images: int) -> dict[str, float]:
    """{"seconds", "images_per_s"}, rounded: timings are noise below a millisecond."""
    return {"seconds": round(seconds, 3),
            "images_per_s": round(images / seconds, 1) if seconds > 0 else 0.0}


def seconds(work: Callable[[], object], device: torch.device) -> float:
    """Wall time of one call of `work`, GPU work included (benchmarks)."""
    with Stopwatch(device) as watch:
        work()
    return watch.seconds
