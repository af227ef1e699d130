"""Resumable training: a checkpoint after every epoch, resumed only by the run that wrote it.

The checkpoint (one file, a `persist` output of the train stage, so `dvc repro` keeps it) holds
the model after the last completed epoch and its training state (optimizer, lr schedule, fp16
gradient scaler, EMA weights, the weights train.keep chose so far), the history so far, and
the run's inputs: the params the train stage reads, the md5 of its data and code, the torch
version and the device. Every epoch draws from its own seed (`train.epoch_seed`), so a run
resumed at an epoch boundary ends exactly like an uninterrupted one on the CPU. A checkpoint
whose inputs differ is never resumed from: training starts fresh and says what changed.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from advlab.core.closure import import_closure
from advlab.core.errors import BadFileError
from advlab.core.io import load_torch, save_torch
from advlab.data.formats import md5
from advlab.params import Params
from advlab.params.fields import Section
from advlab.training.distributed import unwrap
from advlab.training.loop import EpochResult, FitJob, fit
from advlab.training.optim import cpu_weights

VERSION = 2  # 2: the training state (schedule, scaler, EMA, kept weights) beside the optimizer
# The params the train stage reads: the same list as its `params:` in dvc.yaml (a test checks).
TRAIN_PARAMS = ("base", "train", "evaluate.batch_size")


def run_inputs(params: Params, data: Sequence[Path], script: Path, device: torch.device,
               processes: int = 1) -> dict[str, object]:
    """Everything that determines a training run, as flat key -> value: the train params, the
    md5 of the `data` files (splits) and of the code the stage `script` runs (its import
    closure, the same files as its code deps in dvc.yaml), torch, the device and the number of
    processes. That number is not always train.gpus (torchrun started by hand), and a run on N
    ranks differs from one on 1 (per-rank dropout and BatchNorm statistics on CPU, the
    all-reduce's rounding), so a checkpoint is resumed only with as many processes."""
    inputs: dict[str, object] = {}
    for key in TRAIN_PARAMS:
        value: object = params
        for part in key.split("."):
            value = getattr(value, part)
        if isinstance(value, Section):
            inputs.update({f"{key}.{k}": v for k, v in value.model_dump().items()})
        else:
            inputs[key] = value
    for path in data:
        inputs[f"md5 {path.name}"] = md5(path)
    root = script.resolve().parents[1]  # the repository: stages/<script>
    for name in import_closure(script.resolve().relative_to(root), root):
        inputs[f"md5 {name}"] = md5(root / name)
    inputs["torch"] = str(torch.__version__)  # a TorchVersion, which weights_only refuses
    inputs["device"] = device.type
    inputs["processes"] = processes
    return inputs


def save_checkpoint(path: Path, inputs: dict[str, object], job: FitJob,
                    history: list[EpochResult]) -> None:
    save_torch(path, {
        "version": VERSION, "inputs": inputs, "model": cpu_weights(unwrap(job.model)),
        "state": job.state.state_dict(), "history": [dataclasses.asdict(r) for r in history],
    })


def restore(path: Path, inputs: dict[str, object], job: FitJob,
            log: Callable[[str], None] = print) -> list[EpochResult]:
    """Loads the checkpoint into job's model (unwrapped from DDP) and state if it is from this
    run; returns the epochs it completed ([] for a fresh start)."""
    if not path.is_file():
        return []
    try:
        blob = load_torch(path)
    except BadFileError as err:
        log(f"train: ignoring the unreadable checkpoint {path} ({err}); starting fresh")
        return []
    if not isinstance(blob, dict) or blob.get("version") != VERSION:
        log(f"train: {path} is not a checkpoint of this version; starting fresh")
        return []
    saved = blob["inputs"]
    changed = sorted(k for k in saved.keys() | inputs.keys() if saved.get(k) != inputs.get(k))
    if changed:
        shown = ", ".join(changed[:6]) + (", ..." if len(changed) > 6 else "")
        log(f"train: the checkpoint {path} is from different params, data or code "
            f"({shown} changed); starting fresh")
        return []
    unwrap(job.model).load_state_dict(blob["model"])
    job.state.load_state_dict(blob["state"])
    return [EpochResult(**r) for r in blob["history"]]


def fit_resumable(job: FitJob, path: Path, inputs: dict[str, object],
                  log: Callable[[str], None] = print) -> list[EpochResult]:
    """train.fit, checkpointed to `path` after every epoch and resumed from it when it matches
    `inputs`. Returns every epoch's result; job.on_epoch sees every epoch too, restored ones
    first (so a logger whose output was deleted before the rerun still gets the whole run).
    Under DDP every rank restores the checkpoint and rank 0 alone writes it."""
    cfg = job.cfg
    for result in restore(path, inputs, job, log):
        job.history.append(result)
        if job.on_epoch is not None:
            job.on_epoch(result)
    done = len(job.history)
    if done == cfg.epochs:
        log(f"train: {path} already holds all {done} epochs of this run; reusing it "
            "(delete it to train again)")
        return job.history
    if done:
        log(f"train: resuming from {path}: epochs 1..{done} done, continuing at {done + 1}")

    def checkpoint(result: EpochResult) -> None:
        if job.ranks.is_main:
            save_checkpoint(path, inputs, job, [*job.history, result])

    start = time.perf_counter()
    try:
        fit(job, save=checkpoint)
    except KeyboardInterrupt as err:
        if len(job.history):
            raise type(err)(f"epochs 1..{len(job.history)} are saved in {path}; rerun "
                            f"`dvc repro` to resume from epoch {len(job.history) + 1}") from None
        raise
    seconds = time.perf_counter() - start
    trained = len(job.history) - done
    log(f"train: {trained} epochs in {seconds:.1f} s "
        f"({len(job.train_set) * trained / seconds:.0f} images/s)")
    return job.history
