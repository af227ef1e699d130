"""The reference AutoAttack (fra31's code, packaged on PyPI as pyautoattack, MIT; a dev
dependency) run as its users run it: version='standard' at one eps. Read back, as it prints
them, the robust accuracy and the time after each of its attacks. For the test that checks this
project's worst case against it and for benchmarks/autoattack_reference.py; no stage imports it.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field

import torch
from torch import nn

NAMES = {"APGD-CE": "apgd_ce", "APGD-T": "apgd_t", "FAB-T": "fab_t", "SQUARE": "square"}


@dataclass
class ReferenceRun:
    """Robust images after each attack (cumulative, as this project's `after`) and seconds."""

    images: int
    robust: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    total_seconds: float = 0.0


class _Log(logging.Handler):
    """Reads 'initial accuracy: 70.67%' and 'robust accuracy after APGD-CE: 41.33% ...'."""

    def __init__(self, run: ReferenceRun) -> None:
        super().__init__(logging.DEBUG)
        self.run, self.mark = run, time.perf_counter()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("initial accuracy"):
            self.mark = time.perf_counter()
        found = re.match(r"robust accuracy after (\S+): ([0-9.]+)%", message)
        if found:
            name, now = NAMES[found[1]], time.perf_counter()
            self.run.robust[name] = round(float(found[2]) / 100 * self.run.images)
            self.run.seconds[name], self.mark = now - self.mark, now


def reference_autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                         batch_size: int, seed: int = 0) -> ReferenceRun:
    """AutoAttack standard (L-inf) on float images x in [0, 1] at eps, seeded."""
    import pyautoattack  # a dev dependency: only the test and the benchmark need it

    run = ReferenceRun(len(x))
    log, logger = _Log(run), logging.getLogger("auto-attack")
    logger.addHandler(log)
    level, logger.level = logger.level, logging.DEBUG
    began = time.perf_counter()
    try:
        attack = pyautoattack.AutoAttack(model.eval(), norm="Linf", eps=eps, version="standard",
                                         seed=seed, device=x.device)
        attack.run_standard_evaluation(x, y, batch_size=batch_size)
    finally:
        logger.removeHandler(log)
        logger.setLevel(level)
    run.total_seconds = time.perf_counter() - began
    for name in NAMES.values():  # it stops once no image stands
        run.robust.setdefault(name, 0)
        run.seconds.setdefault(name, 0.0)
    return run
