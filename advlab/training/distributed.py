"""Data-parallel training with torchrun: one process per GPU (NCCL) or per CPU share (gloo).

`train.gpus > 1` makes the train stage relaunch itself under torchrun; a stage started by
torchrun joins the process group. `train.batch_size` stays the global batch: each of the N
ranks takes its slice of every global batch, and the loss is scaled so that DDP's gradient
average equals the single-device gradient of the whole batch. Only rank 0 writes anything.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from advlab.params.fields import ParamsError


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Ranks()


def launched_by_torchrun() -> bool:
    return torchrun_world() > 1


def torchrun_world() -> int:
    """The number of processes torchrun started (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def check_processes(device: torch.device, processes: int, device_param: str) -> None:
    """Refuses, as a params error, what DDP on `device` with `processes` ranks cannot do:
    more ranks than visible CUDA GPUs (each rank takes one), or one named GPU for several ranks
    (rank r takes GPU r; choose the GPUs with CUDA_VISIBLE_DEVICES instead)."""
    if device.type != "cuda" or processes == 1:
        return
    visible = torch.cuda.device_count()
    if processes > visible:
        raise ParamsError(f"params: train.gpus = {processes} is not allowed; expected at most "
                          f"{visible} (the CUDA GPUs visible here)")
    if device.index is not None:
        raise ParamsError(f"params: base.device = {device_param!r} is not allowed with "
                          f"{processes} processes; expected cuda or auto (rank r takes GPU r; "
                          "choose GPUs with CUDA_VISIBLE_DEVICES)")


def torchrun_command(processes: int, argv: list[str]) -> list[str]:
    """The command that reruns this script under torchrun with `processes` ranks on this host."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={processes}", *argv]


def own_command() -> list[str]:
    """This process's command line without the interpreter and its options (sys.orig_argv):
    what torchrun runs on every rank, a wrapper around the script included."""
    args = sys.orig_argv[1:]
    while args and args[0].startswith("-"):
        args = args[2:] if args[0] in ("-W", "-X") else args[1:]
    return args


def run_ranks(command: list[str]) -> int:
    """Runs torchrun's command in a process group of its own and waits for it.

    SIGINT and SIGTERM sent to this process go to the whole group, torchrun and every rank
    (Ctrl-C in a terminal reaches the foreground group only, a `kill` this process only);
    once torchrun has ended, whatever is left of its group is killed: no rank outlives the
    stage. Returns torchrun's exit code, or 128 + the signal's number after one.
    """
    received: list[int] = []
    proc: subprocess.Popen | None = None

    def forward(signum: int, frame: object) -> None:
        received.append(signum)
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        proc = subprocess.Popen(command, start_new_session=True)
        if received:  # it came before torchrun was there to receive it
            os.killpg(proc.pid, received[0])
        code = None
        while code is None:  # a timed wait runs Python code often, so the handler runs even
            try:             # when the signal landed on a thread other than this one
                code = proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    return 128 + received[0] if received else code


def join(device: torch.device) -> tuple[Ranks, torch.device]:
    """Joins the process group torchrun set up; on CUDA each rank takes its own GPU."""
    ranks = Ranks(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]),
                  int(os.environ["LOCAL_RANK"]))
    if device.type == "cuda":
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    else:  # ranks share the CPU cores instead of each taking all of them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // ranks.world))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return ranks, device


def wrap(model: nn.Module, ranks: Ranks, device: torch.device, compile: bool = False) -> nn.Module:
    """What the training step calls: DDP around the model when there are several ranks
    (SyncBatchNorm where supported), compiled by torch.compile when `compile` (train.compile).
    Everything else (validation, the training attack, checkpoints) runs `unwrap`'s module."""
    wrapped = _ddp(model, ranks, device)
    return torch.compile(wrapped) if compile else wrapped


def _ddp(model: nn.Module, ranks: Ranks, device: torch.device) -> nn.Module:
    if ranks.world == 1:
        return model
    if device.type != "cuda":  # SyncBatchNorm runs on GPUs only; on CPU BatchNorm stays per
        return nn.parallel.DistributedDataParallel(model)  # rank, rank 0's buffers broadcast
    # SyncBatchNorm's running statistics come from the global batch, so they are equal on every
    # rank already: broadcasting them before each forward (DDP's default) would only add a
    # collective per step.
    return nn.parallel.DistributedDataParallel(
        nn.SyncBatchNorm.convert_sync_batchnorm(model), device_ids=[device.index],
        broadcast_buffers=False)


def unwrap(model: nn.Module) -> nn.Module:
    """The model itself, out of torch.compile's wrapper and DDP's (same parameters)."""
    model = getattr(model, "_orig_mod", model)  # torch.compile's OptimizedModule
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def mean_across_ranks(values: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    if ranks.world > 1:
        values = values.clone()
        dist.all_reduce(values)
        values /= ranks.world
    return values


def share_buffers(model: nn.Module, ranks: Ranks) -> None:
    """Rank 0's buffers (BatchNorm's running statistics) on every rank. On CPU each rank's
    BatchNorm updates its own after DDP's broadcast, so at an epoch's end they differ: rank 0's
    are the ones the checkpoint holds and every rank resumes with."""
    if ranks.world > 1:
        for buffer in unwrap(model).buffers():
            dist.broadcast(buffer, 0)


def weights_identical_across_ranks(model: nn.Module, ranks: Ranks) -> bool:
    """Gathers every rank's flattened parameters and compares them bit for bit."""
    flat = torch.cat([p.detach().flatten() for p in unwrap(model).parameters()])
    if ranks.world == 1:
        return True
    gathered = [torch.empty_like(flat) for _ in range(ranks.world)]
    dist.all_gather(gathered, flat)
    return all(torch.equal(gathered[0], other) for other in gathered[1:])


def leave() -> None:
    """Leaves the process group once what used it (DDP's reducer, in reference cycles) is
    collected: left to the interpreter's exit, gloo's threads can abort the rank (SIGABRT,
    "terminate called without an active exception")."""
    if dist.is_initialized():
        gc.collect()
        dist.barrier()  # every rank done with gloo before any closes its connections
        dist.destroy_process_group()
