"""split stage: official train set -> stratified train/val tensors; official test set as is."""

import argparse

from advlab.core.stage import path_arg, run_stage
from advlab.data.formats import read_raw
from advlab.data.images import split_train_val
from advlab.params import load_params


def main(args: argparse.Namespace) -> None:
    params = load_params()
    data = params.data
    official_train, test = read_raw(args.raw, data.dataset, data.verify)
    train, val = split_train_val(official_train, data.train_size, data.val_size, params.base.seed)
    for name, part in {"train": train, "val": val, "test": test}.items():
        part.save(args.out / f"{name}.pt")
        print(f"split: {name:5} {len(part):6} images of {'x'.join(map(str, part.shape))}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    path_arg(parser, "--raw", "the raw data folder (download's output)")
    path_arg(parser, "--out", "the folder for train.pt, val.pt, test.pt")
    run_stage("split", main, parser)
