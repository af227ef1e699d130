"""No file the pipeline reads can run code: torch.load is always weights_only=True, and the only
pickles are CIFAR batches, read with a restricted unpickler (md5-checked first for the official
files). Behaviour: a torch file holding a pickled object is refused below; a CIFAR pickle that
would run code is refused in test_datasets_errors."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest
import torch

from advlab.core.errors import BadFileError
from advlab.core.io import load_torch
from advlab.data.images import ImageSet
from advlab.models import load_model

ROOT = Path(__file__).resolve().parents[1]


def python_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard",
                             "*.py"], cwd=ROOT, check=True, capture_output=True, text=True)
    return [ROOT / name for name in listed.stdout.split()]


def calls(path: Path) -> list[tuple[str, ast.Call]]:
    """(dotted name, call) of every call of a plain dotted name, e.g. torch.load."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            parts, func = [], node.func
            while isinstance(func, ast.Attribute):
                parts.append(func.attr)
                func = func.value
            if isinstance(func, ast.Name):
                found.append((".".join([func.id, *reversed(parts)]), node))
    return found


def keyword(call: ast.Call, name: str) -> object:
    for kw in call.keywords:
        if kw.arg == name and isinstance(kw.value, ast.Constant):
            return kw.value.value
    return None


def test_every_torch_load_is_weights_only():
    files = python_files()
    assert any(p.name == "io.py" for p in files)
    loads = [(p, c) for p in files for name, c in calls(p) if name == "torch.load"]
    assert loads, "expected at least advlab.core.io.load_torch"
    unsafe = [f"{p.relative_to(ROOT)}:{c.lineno}" for p, c in loads
              if keyword(c, "weights_only") is not True]
    assert not unsafe, f"torch.load without weights_only=True at {unsafe}"


def test_pickles_are_read_only_by_the_restricted_cifar_reader():
    pipeline = [p for p in python_files() if p.parts[len(ROOT.parts)] in ("advlab", "stages")]
    readers = {"pickle.load", "pickle.loads", "pickle.Unpickler", "pickle.Unpickler.load"}
    found = [f"{p.relative_to(ROOT)}:{c.lineno}" for p in pipeline
             for name, c in calls(p) if name in readers]
    assert not found, f"pickle read outside the restricted CIFAR unpickler at {found}"
    allow = [f"{p.relative_to(ROOT)}:{c.lineno}" for p in pipeline
             for name, c in calls(p) if name.endswith("np.load") or name == "numpy.load"
             if keyword(c, "allow_pickle") is True]
    assert not allow, f"np.load(allow_pickle=True) at {allow}"
    source = (ROOT / "advlab/data/formats.py").read_text()
    assert "class _BatchUnpickler(pickle.Unpickler)" in source and "def find_class" in source


class Payload:
    """Unpickling it runs code: Path(marker).touch()."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


@pytest.mark.parametrize("load", [load_torch, ImageSet.load, load_model])
def test_a_torch_file_holding_a_pickled_object_is_refused(tmp_path, load):
    path, marker = tmp_path / "model.pt", tmp_path / "code-ran"
    torch.save({"state_dict": Payload(marker)}, path)
    with pytest.raises(BadFileError, match=f"{path} is not a readable torch file") as caught:
        load(path)
    assert "refused because loading it could run code" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert not marker.exists()
