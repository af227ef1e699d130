"""What every stage script shares: clear one-line errors instead of tracebacks, and timing."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from advlab.datasets import DatasetError
from advlab.params import ParamsError

EXPECTED_ERRORS = (ParamsError, DatasetError, FileNotFoundError, ValueError, RuntimeError)


def run_stage(name: str, main: Callable[[argparse.Namespace], None],
              parser: argparse.ArgumentParser) -> None:
    """Parses the stage's arguments and runs it; exits 1 with one clear line on bad input."""
    args = parser.parse_args()
    start = time.perf_counter()
    try:
        main(args)
    except KeyboardInterrupt:
        print(f"\n{name}: interrupted; rerun `dvc repro` to start again", file=sys.stderr)
        sys.exit(130)
    except EXPECTED_ERRORS as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        sys.exit(1)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
        print(f"{name}: done in {time.perf_counter() - start:.1f} s")


def path_arg(parser: argparse.ArgumentParser, flag: str, help: str) -> None:
    parser.add_argument(flag, type=Path, required=True, help=help)
