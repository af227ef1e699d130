"""The code a stage runs: its script and every advlab file it imports, directly or through other
modules (the import closure), read from the source with `ast`.

Two places rely on it: each stage's code `deps` in dvc.yaml (tests/test_closure.py fails when
they differ) and the train checkpoint's fingerprint (advlab/training/checkpoint.py). `python -m
advlab.core.closure` prints every stage's closure, ready to paste into dvc.yaml.
"""

from __future__ import annotations

import argparse
import ast
import re
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

import yaml

PACKAGE = "advlab"
ROOT = Path(__file__).resolve().parents[2]  # advlab/core/closure.py


def _module_file(root: Path, name: str) -> Path | None:
    base = root.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _package_of(path: Path, root: Path) -> list[str]:
    """The package a module (or a package's __init__.py) belongs to, as name parts."""
    return list(path.relative_to(root).parts[:-1])


def _is_type_checking(node: ast.AST) -> bool:
    """`if TYPE_CHECKING:` or `if typing.TYPE_CHECKING:`: a block only type checkers run."""
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _run_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of `tree` that may run: all but the body of `if TYPE_CHECKING:` blocks (their
    `else:` runs)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if _is_type_checking(node):
            todo.extend(node.orelse)
        else:
            todo.extend(ast.iter_child_nodes(node))


def _imported_names(path: Path, root: Path) -> set[str]:
    """Every dotted name an import statement of `path` may load as a module, anywhere it may run
    (top level, functions, branches; not `if TYPE_CHECKING:`): `from a import b` may import the
    module a.b."""
    names: set[str] = set()
    for node in _run_nodes(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = _package_of(path, root)
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return {n for n in names if n == PACKAGE or n.startswith(f"{PACKAGE}.")}


def _files_of(name: str, root: Path) -> set[Path]:
    """The module's file and its parent packages' __init__.py (importing it runs them all)."""
    parts = name.split(".")
    found = (_module_file(root, ".".join(parts[:i])) for i in range(1, len(parts) + 1))
    return {path for path in found if path is not None}


def direct_imports(path: Path, root: Path = ROOT) -> set[str]:
    """The package files `path` imports itself (not through them), relative to root."""
    return {found.relative_to(root).as_posix() for name in _imported_names(path, root)
            for found in _files_of(name, root)} - {path.relative_to(root).as_posix()}


def import_closure(script: str | Path, root: Path = ROOT) -> list[str]:
    """`script` and every file of the package it imports, as sorted paths relative to root."""
    todo, seen = [root / script], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imported_names(path, root):
            todo.extend(_files_of(name, root) - seen)
    return sorted(path.relative_to(root).as_posix() for path in seen)


def stage_script(cmd: str) -> str:
    """The script of a dvc.yaml command such as `python stages/train.py --out ...`."""
    return next(arg for arg in shlex.split(cmd) if arg.endswith(".py"))


def stage_closures(root: Path = ROOT) -> dict[str, list[str]]:
    """Each stage of dvc.yaml -> the import closure of its script."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    return {name: import_closure(stage_script(stage["cmd"]), root)
            for name, stage in stages.items()}


_STAGE = re.compile(r"^  (\w+):\s*$")
_CODE_DEP = re.compile(r"^(\s+)- (\S+\.py)\s*$")


def with_closures(dvc_yaml: str, closures: dict[str, list[str]]) -> str:
    """dvc.yaml's text with each stage's run of code deps (`- path.py` lines) replaced by its
    closure."""
    out: list[str] = []
    stage = None
    for line in dvc_yaml.splitlines(keepends=True):
        if match := _STAGE.match(line):
            stage = match[1]
        if (dep := _CODE_DEP.match(line)) and stage in closures:
            first_script = sorted(closures.pop(stage), key=lambda path: path.startswith("advlab/"))
            out.extend(f"{dep[1]}- {path}\n" for path in first_script)
        elif not dep:
            out.append(line)
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Each dvc.yaml stage's code deps: its script's "
                                     "import closure.")
    parser.add_argument("--write", action="store_true", help="rewrite dvc.yaml's code deps")
    closures = stage_closures()
    if parser.parse_args(argv).write:
        path = ROOT / "dvc.yaml"
        path.write_text(with_closures(path.read_text(), dict(closures)))
        print(f"closure: wrote the code deps of {len(closures)} stages into {path}")
        return 0
    for name, files in closures.items():
        print(f"{name}:\n" + "".join(f"  - {path}\n" for path in files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
