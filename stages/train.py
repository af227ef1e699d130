"""train stage: fit the model on the train split, validating after every epoch."""

import argparse
import subprocess
import sys
import time

import torch

from advlab import distributed
from advlab.data import load_splits
from advlab.device import pick_device, prepare_model
from advlab.io import write_csv, write_json
from advlab.models import build_model, format_parameter_table, parameter_table, save_model
from advlab.params import load_params
from advlab.stage import path_arg, run_stage
from advlab.train import fit, make_optimizer, model_config


def main(args: argparse.Namespace) -> None:
    params = load_params()
    if params.train.gpus > 1 and not distributed.launched_by_torchrun():
        sys.exit(subprocess.call(distributed.torchrun_command(params.train.gpus, sys.argv)))
    device = pick_device(params.base.device)
    ranks = distributed.SINGLE
    if distributed.launched_by_torchrun():
        ranks, device = distributed.join(device)
    log = print if ranks.is_main else lambda *a, **k: None
    splits = load_splits(args.splits, ("train", "val"))
    train_set, val_set = splits["train"].to(device), splits["val"].to(device)

    torch.manual_seed(params.base.seed)
    model = prepare_model(build_model(model_config(params.train.model, splits["train"])), device)
    rows = parameter_table(model)
    log(f"train: {params.train.model} on {device} x {ranks.world}, "
        "parameters by the lab's Table 1.3:")
    log(format_parameter_table(rows))

    start = time.perf_counter()
    ddp_model = distributed.wrap(model, ranks, device)
    history = fit(ddp_model, make_optimizer(ddp_model, params.train), train_set, val_set,
                  params.train, params.base.seed, params.evaluate.batch_size, ranks=ranks)
    seconds = time.perf_counter() - start
    if not distributed.weights_identical_across_ranks(ddp_model, ranks):
        raise RuntimeError("the ranks' weights differ after training")
    log(f"train: {len(history)} epochs in {seconds:.1f} s "
        f"({len(train_set) * len(history) / seconds:.0f} images/s"
        + (f", weights identical across {ranks.world} ranks)" if ranks.world > 1 else ")"))

    if ranks.is_main:
        save_model(args.model, model)
        write_csv(args.metrics / "train.csv", ["epoch", "loss", "val_acc"],
                  [(r.epoch, round(r.loss, 6), round(r.val_acc, 6)) for r in history])
        last = history[-1]
        write_json(args.metrics / "train.json", {
            "epochs": last.epoch, "loss": round(last.loss, 6), "val_acc": round(last.val_acc, 6),
            "best_val_acc": round(max(r.val_acc for r in history), 6),
            "model": {"params": sum(count for *_, count in rows)},
        })
        print(f"train: wrote {args.model}, {args.metrics}/train.json, {args.metrics}/train.csv")
    distributed.leave()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    path_arg(parser, "--splits", "the folder with train.pt and val.pt")
    path_arg(parser, "--model", "where to write the trained model")
    path_arg(parser, "--metrics", "the folder for train.json and train.csv")
    run_stage("train", main, parser)
