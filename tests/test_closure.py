"""Each stage's code deps in dvc.yaml are exactly its import closure, computed from the code; the
train checkpoint's fingerprint covers the same files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from advlab.core.closure import import_closure, stage_closures, stage_script
from advlab.params import Params
from advlab.training.checkpoint import run_inputs

ROOT = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def code_deps(stage: dict) -> set[str]:
    return {dep for dep in stage["deps"] if dep.endswith(".py")}


@pytest.mark.parametrize("name", STAGES)
def test_dvc_yaml_code_deps_are_the_stage_import_closure(name):
    closure = set(stage_closures(ROOT)[name])
    listed = code_deps(STAGES[name])
    missing, extra = sorted(closure - listed), sorted(listed - closure)
    assert not missing and not extra, (
        f"dvc.yaml stage {name!r}: deps miss {missing} and list {extra} that "
        f"{stage_script(STAGES[name]['cmd'])} does not import "
        "(`python -m advlab.core.closure` prints every stage's closure)")


def test_every_stage_reaches_the_shared_modules():
    """The modules the issue found missing from every stage's deps."""
    for name, closure in stage_closures(ROOT).items():
        assert {"advlab/core/io.py", "advlab/params/__init__.py",
                "advlab/core/stage.py"} <= set(closure), name


def test_the_train_checkpoint_fingerprints_the_train_stage_closure():
    inputs = run_inputs(Params(), [], ROOT / "stages/train.py", torch.device("cpu"))
    fingerprinted = {key.removeprefix("md5 ") for key in inputs if key.startswith("md5 ")}
    assert fingerprinted == code_deps(STAGES["train"])


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_closure_follows_every_import_form_and_nothing_else(tmp_path):
    write(tmp_path, {
        "stages/run.py": "import os\nfrom advlab import a\nimport advlab.pkg.c as c\n",
        "advlab/__init__.py": "",
        "advlab/a.py": "from advlab.b import helper\n",
        "advlab/b.py": "def helper():\n    from . import lazy\n",  # relative, inside a function
        "advlab/lazy.py": "",
        "advlab/pkg/__init__.py": "",
        "advlab/pkg/c.py": "from ..a import x\nfrom .d import y\n",
        "advlab/pkg/d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                           "    import advlab.typed\nelse:\n    import advlab.untyped\n",
        "advlab/typed.py": "",  # imported only by type checkers
        "advlab/untyped.py": "",
        "advlab/unused.py": "import advlab.a\n",
    })
    assert import_closure("stages/run.py", tmp_path) == [
        "advlab/__init__.py", "advlab/a.py", "advlab/b.py", "advlab/lazy.py",
        "advlab/pkg/__init__.py", "advlab/pkg/c.py", "advlab/pkg/d.py", "advlab/untyped.py",
        "stages/run.py"]
    assert import_closure("advlab/pkg/d.py", tmp_path) == [
        "advlab/__init__.py", "advlab/pkg/d.py", "advlab/untyped.py"]
