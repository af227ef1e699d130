"""attack.json and attack.csv: one entry per method (the worst case is one more), per eps."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from advlab.core.io import write_csv, write_json
from advlab.evaluation.robustness import AttackResult
from advlab.params.attack import eps_key


def summary(results: Sequence[AttackResult]) -> dict:
    """attack.json: per method, metrics keyed by `eps=<value>`, so `dvc metrics show/diff`
    lists each one (e.g. `pgd.accuracy.eps=0.1`); the worst case adds `after`, the cumulative
    accuracy after each attack of the cascade (`worst_case.after.apgd_ce.eps=0.1`)."""
    first = results[0]
    data: dict = {"images": first.images, "epsilons": list(first.epsilons),
                  "methods": [r.method for r in results],
                  "zero_grad_fraction": round(first.zero_grad_fraction, 8)}
    for result in results:
        rows = result.rows()
        data[result.method] = {key: {eps_key(row["epsilon"]): row[key] for row in rows}
                               for key in ("accuracy", "mean_confidence", "flipped")}
        if result.after:
            data[result.method]["after"] = {
                name: {eps_key(eps): acc for eps, acc in zip(result.epsilons, values, strict=True)}
                for name, values in result.after.items()}
    return data


def csv_rows(results: Sequence[AttackResult]) -> list[dict[str, str | float | int]]:
    """attack.csv, long format: one row per method and eps. The plots in dvc.yaml draw a line
    per method from the `method` column (template .dvc/plots/by_method.json), so the file and
    the plots stay valid whichever methods ran."""
    return [{"method": result.method, **row} for result in results for row in result.rows()]


def save_metrics(folder: str | Path, results: Sequence[AttackResult] | AttackResult) -> None:
    """attack.json (summary) and attack.csv (one row per eps, for `dvc plots`) in folder."""
    if isinstance(results, AttackResult):
        results = [results]
    folder = Path(folder)
    write_json(folder / "attack.json", summary(results))
    rows = csv_rows(results)
    write_csv(folder / "attack.csv", list(rows[0]), [list(row.values()) for row in rows])
