"""Regression gate: fail the build when a metric got worse than the baseline allows.

    python -m advlab.experiments.gate [--baseline results/ci | --rev REF] [--current metrics]
        [--spec gate.yaml]

Metrics are named FILE:KEY as `dvc metrics show` flattens them (test.json:accuracy,
test.json:per_class.ring). The spec (gate.yaml) lists rules, each a glob on that name, a
direction and a tolerance; the first matching rule judges a metric. The exit status is 1 when
a metric regressed or disappeared, or a metric the spec names exactly is missing; 2 when a file
cannot be read or a folder holds no metrics. Metrics no rule matches, and metrics new since the
baseline, are shown only; so are those of an `info` rule (wall times, throughput: they depend
on the machine), even when missing.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from advlab.experiments.profile import flatten

DIRECTIONS = ("higher", "lower", "equal", "info")
FAILING = ("REGRESSED", "MISSING")


class GateError(Exception):
    """A file the gate needs is missing or unreadable, or the spec is malformed."""


@dataclass(frozen=True)
class Rule:
    pattern: str
    better: str          # higher | lower | equal (any change beyond the tolerance fails) | info
    abs: float = 0.0     # allowed change in the worse direction ...
    rel: float = 0.0     # ... plus this fraction of |baseline|, as in numpy.isclose

    def allowed(self, baseline: float) -> float:
        return self.abs + self.rel * abs(baseline)


@dataclass(frozen=True)
class Row:
    metric: str
    baseline: float | None
    current: float | None
    allowed: str
    verdict: str

    @property
    def failed(self) -> bool:
        return self.verdict in FAILING


def load_spec(path: Path) -> list[Rule]:
    try:
        entries = (yaml.safe_load(path.read_text()) or {})["metrics"]
        rules = [Rule(pattern, **fields) for pattern, fields in entries.items()]
        bad = [r for r in rules if r.better not in DIRECTIONS or not (r.abs >= 0 and r.rel >= 0)]
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as err:
        raise GateError(f"{path}: not a gate spec ({err!r}); see the comment at its top") from None
    if bad:
        raise GateError(f"{path}: {bad[0].pattern}: better must be one of {DIRECTIONS} "
                        f"and abs, rel numbers >= 0; got {bad[0]}")
    return rules


def numbers(flat: dict[str, object]) -> dict[str, float]:
    """The numeric values only: dvc metrics also skips strings, bools and missing values."""
    return {key: value for key, value in flat.items()
            if isinstance(value, int | float) and not isinstance(value, bool)}


def read_folder(folder: Path) -> dict[str, float]:
    """Every metric in FOLDER/*.json; an unreadable file, or none with a number, is an error,
    never an empty result (against an empty baseline every metric would be new, and pass)."""
    if not folder.is_dir():
        raise GateError(f"{folder}/ does not exist")
    metrics: dict[str, float] = {}
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise GateError(f"{path} is unreadable: {err}") from None
        if not isinstance(data, dict):
            raise GateError(f"{path} holds a {type(data).__name__}, not a JSON object")
        metrics.update({f"{path.name}:{key}": value
                        for key, value in numbers(flatten(data)).items()})
    if not metrics:
        raise GateError(f"{folder}/ holds no metrics (no number in any *.json)")
    return metrics


def read_rev(rev: str) -> tuple[dict[str, float], dict[str, float]]:
    """(metrics at REV, workspace metrics) as `dvc metrics diff REV --json --all` reports them."""
    try:
        done = subprocess.run(["dvc", "metrics", "diff", rev, "--json", "--all"],
                              capture_output=True, text=True)
    except OSError as err:
        raise GateError(f"cannot run dvc: {err}") from None
    if done.returncode != 0:
        raise GateError(f"dvc metrics diff {rev} failed: {done.stderr.strip()}")
    sys.stderr.write(done.stderr)  # e.g. a file missing at REV: its metrics show as new
    old: dict[str, object] = {}
    new: dict[str, object] = {}
    for path, entries in json.loads(done.stdout or "{}").items():
        for key, change in entries.items():
            old[f"{Path(path).name}:{key}"] = change.get("old")
            new[f"{Path(path).name}:{key}"] = change.get("new")
    if not numbers(old):
        raise GateError(f"no metrics readable at {rev}: is a baseline committed there?")
    return numbers(old), numbers(new)


def judge(rule: Rule, baseline: float, current: float) -> str:
    change = current - baseline
    worse = {"higher": -change, "lower": change, "equal": abs(change)}[rule.better]
    if not worse <= rule.allowed(baseline):  # also catches NaN
        return "REGRESSED"
    if rule.better != "equal" and -worse > rule.allowed(baseline):
        return "improved"
    return "ok"


def describe(rule: Rule, baseline: float) -> str:
    sign = {"higher": "-", "lower": "+", "equal": "±"}[rule.better]
    return f"{sign}{rule.allowed(baseline):.4g}"


def unused(rules: list[Rule], names: set[str]) -> list[str]:
    """Glob rules that match no metric: a typo, or a file whose layout changed (say, to lists)."""
    return [r.pattern for r in rules
            if not any(fnmatch.fnmatchcase(name, r.pattern) for name in names)]


def compare(baseline: dict[str, float], current: dict[str, float],
            rules: list[Rule]) -> list[Row]:
    def rule_for(name: str) -> Rule | None:
        return next((r for r in rules if fnmatch.fnmatchcase(name, r.pattern)), None)

    exact = {r.pattern for r in rules
             if r.better != "info" and not any(c in r.pattern for c in "*?[")}
    rows = []
    for name in sorted(baseline.keys() | current.keys() | exact):
        base, cur, rule = baseline.get(name), current.get(name), rule_for(name)
        if rule is not None and rule.better == "info":  # reported, never judged
            rows.append(Row(name, base, cur, "", "info"))
        elif cur is None:
            rows.append(Row(name, base, None, "", "MISSING"))
        elif base is None:
            rows.append(Row(name, None, cur, "", "new"))
        elif rule is None:
            rows.append(Row(name, base, cur, "", "not in spec"))
        else:
            rows.append(Row(name, base, cur, describe(rule, base), judge(rule, base, cur)))
    return rows


def _number(value: float | None, spec: str = ".6g") -> str:
    return "" if value is None else format(value, spec)


def table(rows: list[Row], markdown: bool = False) -> str:
    header = ("metric", "baseline", "current", "change", "allowed", "verdict")
    cells = [(r.metric, _number(r.baseline), _number(r.current),
              _number(None if r.baseline is None or r.current is None
                      else r.current - r.baseline, "+.4g"), r.allowed, r.verdict)
             for r in rows]
    if markdown:
        lines = [header, ("---",) * len(header), *cells]
        return "\n".join("| " + " | ".join(line) + " |" for line in lines)
    widths = [max(len(line[i]) for line in (header, *cells)) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in (header, *cells))


def summary(rows: list[Row], against: str) -> str:
    failed = [r for r in rows if r.failed]
    counts = {v: sum(r.verdict == v for r in rows) for v in ("REGRESSED", "MISSING", "improved",
                                                               "new", "not in spec", "info")}
    detail = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    if failed:
        return f"gate: FAIL against {against}: {detail}"
    checked = sum(r.verdict in ("ok", "improved") for r in rows)
    hint = "; improvements beyond tolerance: refresh the baseline" if counts["improved"] else ""
    return (f"gate: pass against {against}: {checked} metrics within tolerance "
            f"({detail or 'all ok'}){hint}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--baseline", type=Path, default=Path("results/ci"), metavar="DIR",
                        help="folder of committed baseline metrics files (default: results/ci)")
    source.add_argument("--rev", metavar="REF",
                        help="compare with the metrics committed at this git ref, via dvc")
    parser.add_argument("--current", type=Path, default=Path("metrics"), metavar="DIR",
                        help="folder of the current run's metrics files (default: metrics)")
    parser.add_argument("--spec", type=Path, default=Path("gate.yaml"),
                        help="directions and tolerances (default: gate.yaml)")
    parser.add_argument("--md", action="store_true", help="print the table as Markdown")
    args = parser.parse_args(argv)
    try:
        rules = load_spec(args.spec)
        if args.rev:
            baseline, current = read_rev(args.rev)
        else:
            baseline, current = read_folder(args.baseline), read_folder(args.current)
    except GateError as err:
        print(f"gate: error: {err}", file=sys.stderr)
        return 2
    rows = compare(baseline, current, rules)
    print(table(rows, args.md))
    print(("\n" if args.md else "") + summary(rows, args.rev or f"{args.baseline}/"))
    for pattern in unused(rules, baseline.keys() | current.keys()):
        print(f"gate: note: no metric matches the rule {pattern!r}")
    return 1 if any(r.failed for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
