"""train stage: fit the model on the train split, validating after every epoch."""

import argparse
import time
from functools import partial

import torch

from advlab.data import load_splits, to_float
from advlab.device import pick_device, prepare_model
from advlab.io import write_csv, write_json
from advlab.models import build_model, format_parameter_table, parameter_table, save_model
from advlab.params import load_params
from advlab.stage import path_arg, run_stage
from advlab.tensorboard_log import log_epoch, log_graph, log_hparams, open_writer
from advlab.train import fit, make_optimizer, model_config


def main(args: argparse.Namespace) -> None:
    params = load_params()
    device = pick_device(params.base.device)
    splits = load_splits(args.splits, ("train", "val"))
    train_set, val_set = splits["train"].to(device), splits["val"].to(device)

    torch.manual_seed(params.base.seed)
    model = prepare_model(build_model(model_config(params.train.model, splits["train"])), device)
    rows = parameter_table(model)
    print(f"train: {params.train.model} on {device}, parameters by the lab's Table 1.3:")
    print(format_parameter_table(rows))

    writer = open_writer(args.tensorboard)
    start = time.perf_counter()
    history = fit(model, make_optimizer(model, params.train), train_set, val_set, params.train,
                  params.base.seed, params.evaluate.batch_size,
                  on_epoch=partial(log_epoch, writer))
    seconds = time.perf_counter() - start
    print(f"train: {len(history)} epochs in {seconds:.1f} s "
          f"({len(train_set) * len(history) / seconds:.0f} images/s)")

    save_model(args.model, model)
    write_csv(args.metrics / "train.csv", ["epoch", "loss", "val_acc"],
              [(r.epoch, round(r.loss, 6), round(r.val_acc, 6)) for r in history])
    last = history[-1]
    write_json(args.metrics / "train.json", {
        "epochs": last.epoch, "loss": round(last.loss, 6), "val_acc": round(last.val_acc, 6),
        "best_val_acc": round(max(r.val_acc for r in history), 6),
        "model": {"params": sum(count for *_, count in rows)},
        "adversarial": {"mode": params.train.adversarial, "eps": params.train.adv_eps},
    })
    log_graph(writer, model, to_float(val_set.images[:1]))
    log_hparams(writer, params, {"loss": last.loss, "val_acc": last.val_acc,
                                 "best_val_acc": max(r.val_acc for r in history)})
    writer.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    path_arg(parser, "--splits", "the folder with train.pt and val.pt")
    path_arg(parser, "--model", "where to write the trained model")
    path_arg(parser, "--metrics", "the folder for train.json and train.csv")
    path_arg(parser, "--tensorboard", "the TensorBoard run folder of this stage")
    run_stage("train", main, parser)
