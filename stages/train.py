"""train stage: fit the model on the train split, validating after every epoch.

Checkpointed after every epoch and resumed from it; with train.gpus > 1 it relaunches itself
under torchrun (DDP), and rank 0 alone prints and writes. Each epoch goes to DVCLive (metrics
and plots, advlab.training.live) and to TensorBoard.
"""

import argparse
import contextlib
import sys
from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter

from advlab.core.device import pick_device, pick_precision, prepare_model
from advlab.core.environment import environment
from advlab.core.stage import path_arg, run_stage
from advlab.data.images import load_splits, to_float
from advlab.evaluation.classification import evaluation_batch_size
from advlab.models import format_parameter_table, new_model, parameter_table, save_model
from advlab.params import Params, load_params
from advlab.reporting.tensorboard_log import log_epoch, log_graph, log_hparams, open_writer
from advlab.training import distributed
from advlab.training.checkpoint import fit_resumable, run_inputs
from advlab.training.live import TrainLive, log_live_epoch
from advlab.training.loop import EpochResult, FitJob, overfitting_line
from advlab.training.metrics import write_train_time


def main(args: argparse.Namespace) -> None:
    params = load_params()
    device = pick_device(params.base.device)
    by_torchrun = distributed.launched_by_torchrun()
    processes = distributed.torchrun_world() if by_torchrun else params.train.gpus
    distributed.check_processes(device, processes, params.base.device)
    if processes > 1 and not by_torchrun:
        sys.exit(distributed.run_ranks(distributed.torchrun_command(
            processes, distributed.own_command())))
    ranks = distributed.SINGLE
    if by_torchrun:
        ranks, device = distributed.join(device)
    # rank 0 logs to TensorBoard and DVCLive; both are closed whatever ends training
    with (open_writer(args.tensorboard) if ranks.is_main else contextlib.nullcontext() as writer,
          TrainLive(args.metrics) if ranks.is_main else contextlib.nullcontext() as live):
        train(args, params, ranks, device, writer, live)
    distributed.leave()  # once train's model, DDP's wrapper included, is garbage


def train(args: argparse.Namespace, params: Params, ranks: distributed.Ranks,
          device: torch.device, writer: SummaryWriter | None, live: TrainLive | None) -> None:
    log = print if ranks.is_main else lambda *_: None
    splits = load_splits(args.splits, ("train", "val"))
    train_set, val_set = splits["train"].to(device), splits["val"].to(device)

    torch.manual_seed(params.base.seed)
    model = prepare_model(new_model(params.train, splits["train"]), device,
                          pick_precision(params.base.precision, device))
    rows = parameter_table(model)
    precision = str(model.precision).removeprefix("torch.")
    if live is not None:  # what params.yaml may leave to "auto", as this run resolved it
        live.log_params({"device": device.type, "precision": precision, "processes": ranks.world})
    log(f"train: {params.train.model} on {device} in {precision}"
        + (f" x {ranks.world} ranks" if ranks.world > 1 else "")
        + ", parameters by the lab's Table 1.3:")
    log(format_parameter_table(rows))

    extra = {"model/params": sum(count for *_, count in rows),
             "adversarial/mode": params.train.adversarial, "adversarial/eps": params.train.adv_eps}
    done: list[EpochResult] = []

    def on_epoch(result: EpochResult) -> None:  # rank 0: live metrics, then TensorBoard
        done.append(result)
        log_live_epoch(live, done, extra, params.train.keep)
        write_train_time(args.metrics, done, len(train_set), environment(device))
        log_epoch(writer, result)
        if line := overfitting_line(done):
            log(line)

    inputs = run_inputs(params, [args.splits / "train.pt", args.splits / "val.pt"],
                        Path(__file__), device, ranks.world)
    trained = distributed.wrap(model, ranks, device, params.train.compile)
    job = FitJob(trained, train_set, val_set, params.train, params.base.seed,
                 evaluation_batch_size(params.evaluate.batch_size, device), ranks,
                 on_epoch=on_epoch if ranks.is_main else None)
    history = fit_resumable(job, args.checkpoint, inputs, log)
    if not distributed.weights_identical_across_ranks(trained, ranks):
        raise RuntimeError("the ranks' weights differ after training")
    if ranks.world > 1:
        log(f"train: weights identical across {ranks.world} ranks")
    if not ranks.is_main:
        return

    kept = job.kept_model()
    save_model(args.model, kept)
    last = history[-1]
    log(f"train: wrote {args.model}" + kept_note(job)
        + f"; {args.metrics}/train.json, train/ (DVCLive) and train_time.json after every epoch")
    log_graph(writer, kept, to_float(train_set.images[:1]))
    validated = {} if last.val_acc is None else {
        "val_acc": last.val_acc, "best_val_acc": max(r.val_acc for r in history)}
    log_hparams(writer, params, {"loss": last.loss, **validated})


def kept_note(job: FitJob) -> str:
    """What models/model.pt holds, when it is not simply the last epoch's weights."""
    what = [] if job.state.ema is None else [f"EMA weights, decay {job.cfg.ema:g}"]
    if job.state.kept is not None:
        what.append(f"epoch {job.state.kept['epoch']} by {job.cfg.keep}")
    return f" ({'; '.join(what)})" if what else ""


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    path_arg(parser, "--splits", "the folder with train.pt and val.pt")
    path_arg(parser, "--model", "where to write the trained model")
    path_arg(parser, "--metrics", "the folder for train.json, train_time.json and train/")
    path_arg(parser, "--tensorboard", "the TensorBoard run folder of this stage")
    path_arg(parser, "--checkpoint", "the checkpoint written after every epoch, resumed from")
    run_stage("train", main, parser)
