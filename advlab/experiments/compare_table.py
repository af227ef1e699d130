"""advlab.experiments.compare's table: a row per experiment, the params that differ, the
headline metrics, attack accuracy per method and eps, the training time and the environment
where it differs."""

from __future__ import annotations

import json
import math
import re

import pandas as pd

from advlab.experiments.compare_read import CompareError, Experiment

EPS_KEY = re.compile(r"^attack\.json:(?P<method>[^.]+)\.accuracy\.eps=(?P<eps>[-+.\deE]+)$")
HEADLINE = {"train.json:val_acc": "val_acc", "test.json:accuracy": "test_acc"}
TIMES = {"train_time.json:seconds": "train_s"}
ENVIRONMENT = re.compile(r"^(?P<stage>\w+)_time\.json:environment\.(?P<key>.+)$")


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
