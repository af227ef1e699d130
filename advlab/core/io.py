"""Atomic writes: a stage killed at any moment leaves the old file or the new one, never half."""

from __future__ import annotations

import contextlib
import csv
import filecmp
import glob
import json
import os
import pickle
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from advlab.core.errors import BadFileError, MissingInputError


@contextlib.contextmanager
def atomic_path(path: str | Path, keep_identical: bool = False) -> Iterator[Path]:
    """Yields a temporary path beside `path`; renames it onto `path` only if the block succeeds.

    The temporary name, `.NAME.XXXX.tmp`, is hidden and matched by .dvcignore, so a file left
    behind by a killed process is never taken for an output; the next write of NAME removes it.
    keep_identical: an existing `path` with the same bytes stays as it is (its mtime too, so
    DVC need not hash it again).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):  # left by a kill -9
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp's 0600 would make outputs private
    try:
        yield Path(tmp)
        if keep_identical and path.is_file() and filecmp.cmp(tmp, path, shallow=False):
            return
        with open(tmp, "rb") as f:  # on disk before the rename: a power cut leaves old or new
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data: object) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def write_csv(path: str | Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def save_torch(path: str | Path, obj: object) -> None:
    """torch.save through a file object: given a path, torch names the records inside the zip
    after the (random) temporary name, and equal tensors would give files of different md5."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def require_file(path: str | Path) -> Path:
    """PATH, or the one-line error of an upstream output not made yet."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path} does not exist: run the stage that writes it "
                                "(dvc repro)")
    return path


def load_torch(path: str | Path, map_location: str | torch.device = "cpu") -> object:
    """torch.load restricted to tensors and plain containers: a file cannot run code."""
    path = require_file(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:  # torch's message advises weights_only=False: no
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if refused is None and (garbled := re.search(r"Unsupported operand \d+", str(err))):
            raise BadFileError(f"{path} is not a readable torch file ({garbled.group(0)}: "
                               "neither a zip archive nor a pickle)") from err
        what = f" ({refused.group(1)})" if refused else ""
        raise BadFileError(f"{path} is not a readable torch file: it holds a pickled Python "
                           f"object{what}, refused because loading it could run code") from err
    except Exception as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise BadFileError(f"{path} is not a readable torch file ({first_line})") from err
