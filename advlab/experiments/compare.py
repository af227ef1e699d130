"""Compare experiments at a glance: `python -m advlab.experiments.compare [EXP ...]`.

    python -m advlab.experiments.compare         # the workspace and the experiments of HEAD
    python -m advlab.experiments.compare lr-a lr-b --eps 0.1
    python -m advlab.experiments.compare --all --md        # every commit's experiments, as Markdown
    python -m advlab.experiments.compare --html compare.html --metrics-dir results/ci

Built on `dvc exp show --json`: a row per experiment with the params that differ between the
rows and the headline metrics: validation and test accuracy, accuracy under each attack
method (read from attack.json, whatever methods it holds) at each eps or at `--eps`, the
training time, and the environment a stage ran in (Python, torch, CUDA, device, dvc) where
the experiments differ in it. In a terminal the table fits `--width` columns (it is turned,
a row per metric, when the experiments do not fit side by side). `--html` writes one
self-contained page, with the table and the curves of every experiment overlaid, drawn to
inline SVG by vl-convert: the page needs no network.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from advlab.core.io import write_text
from advlab.experiments.compare_read import (
    CompareError,
    distinct_names,
    exp_show,
    experiments_of,
    from_folder,
    select,
)
from advlab.experiments.compare_render import to_html, to_markdown, to_text
from advlab.experiments.compare_table import table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiments", nargs="*", metavar="EXP",
                        help="experiment names or revs (default: all that `dvc exp show` lists)")
    parser.add_argument("--all", action="store_true",
                        help="the experiments of every commit (dvc exp show --all-commits)")
    parser.add_argument("--eps", type=float, help="attack accuracy at this eps only")
    parser.add_argument("--metrics-dir", type=Path, action="append", default=[], metavar="DIR",
                        help="add a row from a folder of metrics files, e.g. results/ci")
    parser.add_argument("--md", action="store_true", help="print the table as Markdown")
    parser.add_argument("--html", type=Path, metavar="FILE",
                        help="also write a self-contained page with the curves")
    parser.add_argument("--width", type=int, default=shutil.get_terminal_size((100, 24)).columns,
                        help="terminal columns for the table (default: the terminal's)")
    args = parser.parse_args(argv)
    try:
        exps = select(experiments_of(exp_show(args.all)), args.experiments)
        exps = distinct_names(exps + [from_folder(folder) for folder in args.metrics_dir])
        if not exps:
            raise CompareError("no experiment holds metrics: run `dvc exp run` first")
        frame = table(exps, args.eps)
        print(to_markdown(frame) if args.md else to_text(frame, args.width))
        if args.html:
            write_text(args.html, to_html(frame, exps))
            print(f"compare: wrote {args.html}", file=sys.stderr)
    except CompareError as err:
        print(f"compare: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
