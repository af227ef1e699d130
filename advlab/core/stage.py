"""What every stage script shares: one-line errors for bad input (bugs keep their traceback),
Ctrl-C and SIGTERM handling, and timing."""

from __future__ import annotations

import argparse
import atexit
import gc
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from advlab.core.errors import InputError


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, a scheduler's stop): handled like Ctrl-C, so files are left whole."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def run_stage(name: str, main: Callable[[argparse.Namespace], None],
              parser: argparse.ArgumentParser) -> None:
    """Parses the stage's arguments and runs it; exits 1 with one clear line on bad input
    (an InputError). Any other exception is a bug: it propagates with its traceback.

    Ctrl-C and SIGTERM end the stage with a one-line message (exit 130 or 143), no traceback;
    a KeyboardInterrupt raised with a message (e.g. where training resumes) shows it.
    """
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _terminate)
    # The interpreter's last garbage collections walk every object torch created, about a
    # second at each stage's exit; frozen, they are skipped (the memory goes with the process).
    # Not under torchrun: what a rank's process group left (after an error) is collected
    # while the interpreter is whole (see training.distributed.leave).
    if "RANK" not in os.environ:
        atexit.register(gc.freeze)
    start = time.perf_counter()
    try:
        main(args)
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM; str(err) may say how to resume
        hint = str(err) or "rerun `dvc repro` to start again"
        print(f"\n{name}: interrupted; {hint}", file=sys.stderr)
        sys.exit(128 + (signal.SIGTERM if isinstance(err, Terminated) else signal.SIGINT))
    except InputError as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        sys.exit(1)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
        print(f"{name}: done in {time.perf_counter() - start:.1f} s")


def path_arg(parser: argparse.ArgumentParser, flag: str, help: str) -> None:
    parser.add_argument(flag, type=Path, required=True, help=help)
