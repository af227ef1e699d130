"""Run the pipeline on a named profile as a DVC experiment:
`python -m advlab.experiments.profile NAME`.

A profile (profiles/NAME.yaml) holds only the params.yaml keys it changes. A run uses the
committed params.yaml (`git show HEAD:params.yaml`) plus the profile's keys, whatever earlier
experiments left in the workspace file (`dvc exp run` writes its params there):
every key whose workspace value differs from that target is passed to `dvc exp run` as
`-S key=value` along with the profile's own keys, so the experiment records each of them and
the workspace file is never rewritten by hand (its comments stay). One line names the workspace
values set aside. `--on-workspace` builds on the workspace file instead (and names the values
kept). Keys the caller sets with `-S` win over both.

The run is an ordinary experiment: `dvc exp show` lists it, `dvc exp apply` restores it.
`--save DIR` copies the resulting metrics files to DIR (committed results).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import yaml

from advlab.core.io import atomic_path
from advlab.params import Params, parse_params
from advlab.params.fields import ParamsError, leaf_keys
from advlab.training.metrics import LIVE_FOLDER

PROFILES = Path("profiles")
PARAMS = Path("params.yaml")


LEAVES = frozenset(leaf_keys(Params))  # the keys of params.yaml that hold a value


def deep_merge(base: dict, overrides: dict) -> dict:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    """Dotted key -> value; a key whose value may be a mapping (model.normalize) stays one."""
    flat: dict[str, object] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and name not in LEAVES:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def load_profile(name: str) -> dict:
    path = PROFILES / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PROFILES.glob("*.yaml")))
        raise ParamsError(f"profile {name!r}: {path} does not exist; known profiles: {known}")
    return yaml.safe_load(path.read_text()) or {}


def committed_params(path: Path = PARAMS) -> dict:
    done = subprocess.run(["git", "show", f"HEAD:./{path.as_posix()}"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise ParamsError(f"cannot read the committed {path} ({done.stderr.strip()}); "
                          "--on-workspace builds on the workspace file instead")
    return yaml.safe_load(done.stdout) or {}


def user_keys(dvc_args: list[str]) -> set[str]:
    """The keys the caller sets with `-S key=value` (or --set-param) among dvc's arguments."""
    pairs = zip(dvc_args, dvc_args[1:], strict=False)
    return {value.split("=", 1)[0] for flag, value in pairs if flag in ("-S", "--set-param")}


@dataclass(frozen=True)
class Plan:
    settings: dict[str, object]  # key -> value, passed as -S
    note: str | None  # the line naming workspace values set aside or kept


def plan(name: str, on_workspace: bool = False, keep: Collection[str] = (),
         params_path: Path = PARAMS) -> Plan:
    """What `dvc exp run` must set so the run's params are base + the profile's keys, the base
    being the committed params.yaml (or the workspace's with on_workspace); `keep` are keys
    the caller sets."""
    profile = load_profile(name)
    workspace = yaml.safe_load(params_path.read_text()) or {}
    try:
        committed = committed_params(params_path)
    except ParamsError:
        if not on_workspace:
            raise
        committed = workspace  # no git history to compare with: nothing to name
    target = deep_merge(workspace if on_workspace else committed, profile)
    try:
        parse_params(target)
    except ParamsError as err:
        raise ParamsError(f"{PROFILES / f'{name}.yaml'}: {err}") from None
    flat_target, flat_workspace, flat_committed = map(flatten, (target, workspace, committed))
    settings = {key: value for key, value in flat_target.items() if key not in keep and
                (key in flatten(profile) or flat_workspace.get(key) != value)}
    changed = [f"{key}={json.dumps(flat_workspace.get(key))}"
               for key in sorted(flat_workspace.keys() | flat_committed.keys())
               if flat_workspace.get(key) != flat_committed.get(key)]
    note = None
    if changed:
        what = ("kept (--on-workspace)" if on_workspace else
                "set aside for the committed values (--on-workspace keeps them)")
        note = f"profile: workspace {params_path} differs from the committed one: " \
               f"{', '.join(changed)}; {what}"
    return Plan(settings, note)


def set_args(settings: dict[str, object]) -> list[str]:
    """`-S key=value` for each setting, in DVC's (Hydra's) override grammar."""
    args = []
    for key, value in settings.items():
        args += ["-S", f"{key}={override_value(value)}"]
    return args


def override_value(value: object) -> str:
    """JSON, which the grammar reads, but a mapping as {key:value,...}: it takes no quoted
    keys."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{override_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="a profile in profiles/ (e.g. synthetic, fashion_mnist, ci)")
    parser.add_argument("--save", type=Path, metavar="DIR",
                        help="copy metrics/*.json, *.csv and train/ to DIR after the run")
    parser.add_argument("--dry-run", action="store_true", help="print the dvc command only")
    parser.add_argument("--on-workspace", action="store_true",
                        help="build on the workspace params.yaml, not the committed one")
    args, dvc_args = parser.parse_known_args(argv)
    try:
        todo = plan(args.name, args.on_workspace, user_keys(dvc_args))
    except ParamsError as err:
        print(f"profile: error: {err}", file=sys.stderr)
        return 1
    if todo.note:
        print(todo.note, flush=True)
    command = ["dvc", "exp", "run", *set_args(todo.settings), *dvc_args]
    print("profile:", " ".join(command), flush=True)
    if args.dry_run:
        return 0
    if (code := subprocess.call(command)) != 0:
        return code
    if args.save:
        save_metrics(Path("metrics"), args.save)
        print(f"profile: metrics copied to {args.save}/")
    return 0


def save_metrics(metrics: Path, folder: Path) -> None:
    """metrics/*.json and *.csv, and the train stage's DVCLive folder, copied to `folder`."""
    files = [p for p in metrics.glob("*.*") if p.suffix in (".json", ".csv")]
    files += [p for p in (metrics / LIVE_FOLDER).rglob("*") if p.is_file()]
    for path in sorted(files):
        with atomic_path(folder / path.relative_to(metrics)) as tmp:
            shutil.copyfile(path, tmp)


if __name__ == "__main__":
    sys.exit(main())
