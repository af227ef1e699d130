"""Stage exit: how long a stage process takes to end once its work is done, with the objects
frozen at exit (advlab.core.stage registers gc.freeze) and without (the same run with that
hook unregistered), alternated in one process on the same tiny train-stage folder.

The interpreter's last garbage collections walk every object torch (and torch._dynamo, which
an optimizer imports) created; frozen, they are skipped. Prints each side's median seconds from
the stage's last line to its exit, and from start to exit, over the rounds:

    ./run python benchmarks/stage_exit.py            # about a minute on 2 cores
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from advlab.data.synthetic import synthetic_images

ROOT = Path(__file__).resolve().parents[1]
# Runs the train stage as `python stages/train.py ...` does; with "thaw", the exit hook is
# unregistered once the stage's work is done (before: what every stage did until it existed).
RUNNER = """import atexit, gc, runpy, sys
thaw = sys.argv[1] == "thaw"
sys.argv = sys.argv[2:]  # the script and its arguments, as `python SCRIPT ARGS` sets them
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    if thaw:
        atexit.unregister(gc.freeze)
"""


def train_folder(path: Path) -> list[str]:
    """A folder laid out for the train stage (200 generated images, one epoch); its command."""
    images = synthetic_images(250, seed=0)
    images.subset(torch.arange(200)).save(path / "data/splits/train.pt")
    images.subset(torch.arange(200, 250)).save(path / "data/splits/val.pt")
    (path / "params.yaml").write_text(yaml.safe_dump(
        {"base": {"device": "cpu"}, "train": {"epochs": 1, "batch_size": 50}}))
    command = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["train"]["cmd"]
    _, script, *args = command.split()
    return [str(ROOT / script), *args]


def run_once(folder: Path, command: list[str], side: str) -> tuple[float, float]:
    """(seconds from the stage's last line to its exit, seconds from start to exit)."""
    for output in ("models", "metrics", "runs", "checkpoints"):
        shutil.rmtree(folder / output, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, side, *command], cwd=folder, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    last, lines = start, []
    for line in proc.stdout:
        last = time.perf_counter()
        lines.append(line)
    assert proc.wait() == 0 and "done in" in lines[-1], "".join(lines)
    end = time.perf_counter()
    return end - last, end - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        command = train_folder(folder)
        times = {"freeze": [], "thaw": []}
        for _ in range(args.rounds):
            for side in times:
                times[side].append(run_once(folder, command, side))
    for side, label in (("thaw", "before (no freeze)"), ("freeze", "now (frozen at exit)")):
        exits, totals = zip(*times[side], strict=True)
        print(f"{label:22} exit {statistics.median(exits):.2f} s, "
              f"whole stage {statistics.median(totals):.2f} s")
    pairs = zip(times["thaw"], times["freeze"], strict=True)
    saved = [thaw[1] - freeze[1] for thaw, freeze in pairs]
    print(f"saved per stage process: {statistics.median(saved):.2f} s (median over "
          f"{args.rounds} rounds)")


if __name__ == "__main__":
    main()
