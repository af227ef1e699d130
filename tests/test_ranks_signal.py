"""Ctrl-C or SIGTERM to the train stage under torchrun (train.gpus: 2, gloo on the CPU) stops
every rank: none outlives the stage, the checkpoint stays whole and the rerun resumes from it.
The real stage is held at a known optimizer step (tests/held_stage.py, which the stage's
torchrun relaunch runs on every rank); run_ranks alone is checked in process, fast, against a
launcher that abandons ranks that ignore the signal (the worst case)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from test_resume import CHECKPOINT, HELD, STEPS, checkpoint_epochs, run, start, wait_for, workdir

from advlab.training.distributed import own_command, run_ranks

# A stand-in for torchrun: starts two "ranks" that ignore SIGINT and SIGTERM (as a rank stuck
# in a collective would), writes their ids, and exits on the signal without waiting for them.
LAUNCHER = """
import subprocess, sys
rank = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); " \
       "signal.signal(signal.SIGTERM, signal.SIG_IGN); print(flush=True); time.sleep(600)"
ranks = [subprocess.Popen([sys.executable, "-c", rank], stdout=subprocess.PIPE) for _ in "ab"]
for r in ranks:
    r.stdout.readline()  # each has set its handlers
open(sys.argv[1] + ".tmp", "w").write(" ".join(str(r.pid) for r in ranks))
__import__("os").replace(sys.argv[1] + ".tmp", sys.argv[1])
__import__("time").sleep(600)
"""


def alive(pid: int) -> bool:
    """Runs, or is yet to die of a signal sent to it (a zombie counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def ended(pids: list[int], timeout: float = 30) -> bool:
    """Whether all of pids end within timeout (a SIGKILL takes effect when the kernel next
    schedules the process, not when it is sent); the deadline only bounds a survivor."""
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_run_ranks_forwards_the_signal_and_leaves_no_rank(tmp_path, sig):
    pids = tmp_path / "pids"

    def signal_once_ranks_are_up() -> None:
        while not pids.exists():
            if done.wait(0.01):
                return
        os.kill(os.getpid(), sig)  # as Ctrl-C or `kill` would, to this process alone

    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    done = threading.Event()
    sender = threading.Thread(target=signal_once_ranks_are_up)
    sender.start()
    try:
        code = run_ranks([sys.executable, "-c", LAUNCHER, str(pids)])
    finally:
        done.set()
        sender.join()
    assert code == 128 + sig
    ranks = [int(pid) for pid in pids.read_text().split()]
    assert len(ranks) == 2 and ended(ranks), "a rank outlived run_ranks"
    # the handlers from before are back (SIGINT may have come ignored: nohup, some CI runners)
    assert {s: signal.getsignal(s) for s in handlers} == handlers


def test_own_command_keeps_a_wrapper_and_drops_interpreter_options(monkeypatch):
    monkeypatch.setattr(sys, "orig_argv", ["python", "-u", "-X", "dev", "tests/held_stage.py",
                                           "step", "3", "held", "stages/train.py", "--x", "1"])
    assert own_command() == ["tests/held_stage.py", "step", "3", "held", "stages/train.py",
                             "--x", "1"]


def processes_in(work: Path) -> list[int]:
    """The ids of the processes whose working directory is `work` (the stage and its ranks)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cwd").resolve() == work:
                found.append(int(entry.name))
        except OSError:  # ended meanwhile, or not ours to read
            continue
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="needs Linux's /proc")
def test_sigterm_to_the_stage_stops_every_rank_and_the_rerun_resumes(tmp_path):
    sig = signal.SIGTERM
    work = workdir(tmp_path, gpus=2, epochs=2).resolve()
    proc = start(work, ("step", STEPS + 3))  # each rank holds 3 steps into epoch 2
    try:
        wait_for(work / HELD, proc)
        proc.send_signal(sig)  # to the stage alone, as `kill` or a scheduler sends it
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 128 + sig, err
        assert ended(processes_in(work)), "a rank outlived the stage"
    finally:
        for pid in processes_in(work):
            os.kill(pid, signal.SIGKILL)
    assert f"epochs 1..1 are saved in {CHECKPOINT}" in err, err
    assert checkpoint_epochs(work) == 1  # whole and readable
    assert not (work / "models/model.pt").exists()

    (work / HELD).unlink()
    rerun = run(work)
    assert f"resuming from {CHECKPOINT}: epochs 1..1 done" in rerun.stdout
    assert "weights identical across 2 ranks" in rerun.stdout
    assert checkpoint_epochs(work) == 2
