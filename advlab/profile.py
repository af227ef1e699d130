"""Run the pipeline on a named profile as a DVC experiment: `python -m advlab.profile NAME`.

A profile (profiles/NAME.yaml) holds only the params.yaml keys it changes. They are checked
against the full schema first, then passed to `dvc exp run` as `-S key=value`, so the run is an
ordinary experiment: `dvc exp show` lists it, `dvc exp apply` restores it, params.yaml stays
the default in git. `--save DIR` copies the resulting metrics files to DIR (committed results).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from advlab.params import ParamsError, parse_params

PROFILES = Path("profiles")


def deep_merge(base: dict, overrides: dict) -> dict:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def load_profile(name: str, params_path: Path = Path("params.yaml")) -> dict:
    path = PROFILES / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PROFILES.glob("*.yaml")))
        raise ParamsError(f"profile {name!r}: {path} does not exist; known profiles: {known}")
    overrides = yaml.safe_load(path.read_text()) or {}
    try:
        parse_params(deep_merge(yaml.safe_load(params_path.read_text()) or {}, overrides))
    except ParamsError as err:
        raise ParamsError(f"{path}: {err}") from None
    return overrides


def set_args(overrides: dict) -> list[str]:
    """`-S key=value` for each override; values in JSON, which DVC's override grammar reads."""
    args = []
    for key, value in flatten(overrides).items():
        args += ["-S", f"{key}={json.dumps(value)}"]
    return args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="a profile in profiles/ (e.g. synthetic, fashion_mnist, ci)")
    parser.add_argument("--save", type=Path, metavar="DIR",
                        help="copy metrics/*.json and *.csv to DIR after the run")
    parser.add_argument("--dry-run", action="store_true", help="print the dvc command only")
    args, dvc_args = parser.parse_known_args(argv)
    try:
        command = ["dvc", "exp", "run", *set_args(load_profile(args.name)), *dvc_args]
    except ParamsError as err:
        print(f"profile: error: {err}", file=sys.stderr)
        return 1
    print("profile:", " ".join(command), flush=True)
    if args.dry_run:
        return 0
    if (code := subprocess.call(command)) != 0:
        return code
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        for path in sorted(Path("metrics").glob("*.*")):
            if path.suffix in (".json", ".csv"):
                shutil.copyfile(path, args.save / path.name)
        print(f"profile: metrics copied to {args.save}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
