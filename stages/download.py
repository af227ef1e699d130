"""download stage: put the dataset's files, verified, into the raw folder."""

import argparse

from advlab.core.stage import path_arg, run_stage
from advlab.data.fetch import fetch
from advlab.params import load_params


def main(args: argparse.Namespace) -> None:
    data = load_params().data
    fetch(args.out, data)
    print(f"download: {data.dataset} ready in {args.out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    path_arg(parser, "--out", "the raw data folder")
    run_stage("download", main, parser)
