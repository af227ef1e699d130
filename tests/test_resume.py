"""Resumable training: the real train stage killed (SIGINT, SIGTERM, SIGKILL) and rerun ends with
the same metrics and weights as an uninterrupted run; outputs are never left half-written.

Every kill lands at a known point: the stage runs under tests/held_stage.py, which holds it
there (mid-epoch, or with an output written but not yet renamed) and says so with a file."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml

from advlab.core.device import prepare_model
from advlab.core.io import load_torch
from advlab.data.formats import md5
from advlab.data.images import ImageSet
from advlab.models import build_model, load_model, model_config
from advlab.params import Params
from advlab.params.train import Train
from advlab.training.checkpoint import TRAIN_PARAMS, fit_resumable, restore, run_inputs
from advlab.training.loop import FitJob

ROOT = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
TRAIN = DVC["stages"]["train"]
CHECKPOINT = "checkpoints/train.pt"
EPOCHS = 4
STEPS = 256 // 16  # optimizer steps per epoch: tiny_sets' 256 images, batch_size 16
HELD = "held"  # the file tests/held_stage.py creates once the stage is held
PARAMS = {"base": {"seed": 1, "device": "cpu"},
          "train": {"epochs": EPOCHS, "batch_size": 16},
          "evaluate": {"batch_size": 64}}


def tiny_sets(n_train: int = 256, n_val: int = 64) -> tuple[ImageSet, ImageSet]:
    """Random 3x8x8 images: the test is about resuming, not learning, so small is enough (and
    no kill races the clock: each is held at a known step)."""
    g = torch.Generator().manual_seed(0)
    n = n_train + n_val
    images = torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8)
    full = ImageSet(images, torch.arange(n) % 10, tuple("abcdefghij"))
    return full.subset(torch.arange(n_train)), full.subset(torch.arange(n_train, n))


def workdir(path: Path, **train: object) -> Path:
    """A folder laid out like the repository for the train stage: splits and params.yaml."""
    path.mkdir(parents=True, exist_ok=True)
    train_set, val_set = tiny_sets()
    train_set.save(path / "data/splits/train.pt")
    val_set.save(path / "data/splits/val.pt")
    params = {**PARAMS, "train": {**PARAMS["train"], **train}}
    (path / "params.yaml").write_text(yaml.safe_dump(params))
    return path


def start(work: Path, hold: tuple[str, int] | None = None) -> subprocess.Popen:
    """The train stage's command line from dvc.yaml, run in `work`; hold=(where, n) holds it
    at that point (see tests/held_stage.py) once `work/held` exists."""
    python, script, *args = shlex.split(TRAIN["cmd"])
    assert python == "python"
    held = [str(ROOT / "tests/held_stage.py"), hold[0], str(hold[1]), str(work / HELD)] \
        if hold else []
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, *held, str(ROOT / script), *args], cwd=work,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_held(work: Path, hold: tuple[str, int], sig: int = signal.SIGKILL
              ) -> subprocess.CompletedProcess:
    """Starts the stage held at `hold`, sends `sig` once it is held, and waits for its end."""
    with held(work, hold) as proc:
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    (work / HELD).unlink()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@contextlib.contextmanager
def held(work: Path, hold: tuple[str, int]) -> Iterator[subprocess.Popen]:
    """The stage started and held at `hold`; killed on the way out if it is still running
    (a failed test leaves no process behind)."""
    proc = start(work, hold)
    try:
        wait_for(work / HELD, proc)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def run(work: Path) -> subprocess.CompletedProcess:
    proc = start(work)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, f"train failed:\n{out}\n{err}"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until `path` exists; fails at once if the process ends first (the deadline only bounds
    a hung run)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"train ended before {path} appeared: {proc.communicate()}"
        assert time.monotonic() < deadline, f"{path} did not appear in {timeout} s"
        time.sleep(0.01)


def results(work: Path) -> dict:
    model = load_model(work / "models/model.pt")
    live = work / "metrics/train"  # DVCLive's folder: a .tsv per curve, params.yaml
    return {"train.json": (work / "metrics/train.json").read_text(),
            "dvclive": {p.relative_to(live).as_posix(): p.read_text()
                        for p in sorted(live.rglob("*")) if p.is_file()},
            "weights": model.state_dict(), "model.pt md5": md5(work / "models/model.pt")}


def assert_same(got: dict, want: dict) -> None:
    assert got["train.json"] == want["train.json"]
    assert got["dvclive"] == want["dvclive"]  # every epoch once, none repeated or missing
    assert got["model.pt md5"] == want["model.pt md5"]  # what dvc.lock records
    assert got["weights"].keys() == want["weights"].keys()
    for name, tensor in want["weights"].items():
        assert torch.equal(got["weights"][name], tensor), name


def declared_outputs() -> list[str]:
    paths = []
    for kind in ("outs", "metrics", "plots"):
        for entry in TRAIN.get(kind, []):
            paths.append(next(iter(entry)) if isinstance(entry, dict) else entry)
    return paths


def checkpoint_epochs(work: Path) -> int:
    return len(load_torch(work / CHECKPOINT)["history"])


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    """The folder of an uninterrupted run; it writes nothing but the train stage's declared
    outputs (shared: tests copy it before they change it)."""
    work = workdir(tmp_path_factory.mktemp("reference"))
    before = {p for p in work.rglob("*") if p.is_file()}
    run(work)
    written = {p for p in work.rglob("*") if p.is_file()} - before
    declared = [work / p for p in declared_outputs()]
    assert all(p.exists() for p in declared)
    outside = [p for p in written if not any(p == d or d in p.parents for d in declared)]
    assert not outside, f"written but not declared in dvc.yaml: {outside}"
    assert checkpoint_epochs(work) == EPOCHS
    return work


@pytest.fixture(scope="module")
def reference(reference_run) -> dict:
    return results(reference_run)


SIGNALS = [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGKILL, -signal.SIGKILL)]


@pytest.mark.slow
def test_killed_mid_epoch_by_each_signal_then_rerun_equals_uninterrupted_run(tmp_path, reference):
    """SIGINT 10 steps into epoch 2; the rerun resumes and gets SIGTERM 10 steps into epoch 3;
    the next SIGKILL into epoch 4; the last rerun resumes from epoch 3 and ends exactly as the
    uninterrupted run (so did every resumed epoch: the history is in train.csv)."""
    work = workdir(tmp_path)
    for saved, (sig, code) in enumerate(SIGNALS, start=1):
        killed = kill_held(work, ("step", STEPS + 10), sig)  # counted from the process's start
        assert killed.returncode == code, (sig, killed.stderr)
        assert checkpoint_epochs(work) == saved, sig
        assert not (work / "models/model.pt").exists()
        if sig != signal.SIGKILL:
            assert "Traceback" not in killed.stderr, killed.stderr
            assert (f"train: interrupted; epochs 1..{saved} are saved in {CHECKPOINT}; rerun "
                    f"`dvc repro` to resume from epoch {saved + 1}") in killed.stderr, killed.stderr
        if saved > 1 and sig != signal.SIGKILL:  # SIGKILL loses what stdout had not flushed
            assert f"resuming from {CHECKPOINT}: epochs 1..{saved - 1} done" in killed.stdout

    rerun = run(work)
    assert f"resuming from {CHECKPOINT}: epochs 1..{len(SIGNALS)} done" in rerun.stdout
    assert_same(results(work), reference)


STAGE_RECIPE = {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "schedule": "onecycle",
                "ema": 0.9}


@pytest.mark.slow
def test_sgd_onecycle_ema_killed_mid_run_then_rerun_equals_uninterrupted_run(tmp_path):
    """SIGKILL while the checkpoint of epoch 2 is written (held in its os.replace: the 4th, after
    epoch 1's checkpoint, train.json and train_time.json; DVCLive appends its .tsv rows), so
    the rerun resumes the optimizer, schedule and EMA of epoch 1's end. (The `step` hold
    patches Adam.step, which SGD never calls.)"""
    reference = workdir(tmp_path / "reference", **STAGE_RECIPE)
    run(reference)
    work = workdir(tmp_path / "killed", **STAGE_RECIPE)
    killed = kill_held(work, ("replace", 4))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert checkpoint_epochs(work) == 1
    rerun = run(work)
    assert f"resuming from {CHECKPOINT}: epochs 1..1 done" in rerun.stdout
    assert_same(results(work), results(reference))
    assert "(EMA weights, decay 0.9)" in rerun.stdout
    state = load_torch(work / CHECKPOINT)["state"]
    assert state["scheduler"]["last_epoch"] == EPOCHS * STEPS  # stepped per iteration
    assert_same_state(state, load_torch(reference / CHECKPOINT)["state"])


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "tgkill"), reason="needs Linux tgkill")
def test_held_stage_ends_on_a_signal_that_lands_on_another_thread(tmp_path):
    """The kernel hands a process's signal to any of its threads (torch keeps several): a held
    stage must end wherever it lands (signal.pause() in the main thread waited forever)."""
    with held(workdir(tmp_path), ("step", 1)) as proc:
        others = [int(t) for t in os.listdir(f"/proc/{proc.pid}/task") if int(t) != proc.pid]
        assert others, "the stage has no thread besides the main one"
        assert ctypes.CDLL(None).tgkill(proc.pid, others[0], signal.SIGINT) == 0
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err


@pytest.mark.slow
def test_killed_while_writing_leaves_outputs_absent_or_whole(tmp_path, reference):
    """kill -9 with an output's temporary file written but not renamed: the first checkpoint,
    then (resumed runs) a later checkpoint, then one of the final outputs."""
    work = workdir(tmp_path)
    outputs = [work / p for p in declared_outputs()]
    for n in (1, 3, 3):
        kill_held(work, ("replace", n))
        for path in outputs:  # each is absent, or complete and readable
            if path.suffix == ".pt" and path.exists():
                load_torch(path)
            elif path.suffix == ".json" and path.exists():
                json.loads(path.read_text())
        leftovers = [p for p in work.rglob("*.tmp")]
        assert leftovers and all(p.name.startswith(".") for p in leftovers)  # in .dvcignore
    run(work)
    assert_same(results(work), reference)
    assert not list(work.rglob("*.tmp"))  # the next write of each file removed its leftover


@pytest.mark.slow
def test_checkpoint_from_other_params_is_not_resumed(tmp_path, reference_run):
    work = shutil.copytree(reference_run, tmp_path / "work")  # its checkpoint: every epoch
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["train"].update(lr=0.002, epochs=1)
    (work / "params.yaml").write_text(yaml.safe_dump(params))

    out = run(work).stdout
    assert "is from different params, data or code (train.epochs, train.lr changed); " \
           "starting fresh" in out
    assert "resuming" not in out and "reusing" not in out
    assert load_torch(work / CHECKPOINT)["inputs"]["train.lr"] == 0.002


@pytest.mark.slow
def test_finished_checkpoint_is_reused_with_identical_outputs(tmp_path, reference_run, reference):
    work = shutil.copytree(reference_run, tmp_path / "work")
    (work / "models/model.pt").unlink()
    out = run(work).stdout
    assert f"already holds all {EPOCHS} epochs of this run; reusing it" in out
    assert_same(results(work), reference)


# --- the library, in process ------------------------------------------------------------------

RECIPE = {"optimizer": "sgd", "lr": 0.05, "nesterov": True, "schedule": "onecycle",
          "ema": 0.8, "label_smoothing": 0.1, "weight_decay": 5e-4,
          "decay_norm_and_bias": False, "adversarial": "n_fgsm", "robust_val_images": 16,
          "robust_val_steps": 2, "keep": "best_robust_val"}


def fit_tiny(path: Path, epochs: int = 3, stop_after: int | None = None, seen: list | None = None,
             recipe: dict | None = None, precision: torch.dtype = torch.float32) -> FitJob:
    """A tiny model fitted with checkpoints at `path`; stop_after=k raises Ctrl-C after epoch k."""
    train_set, val_set = tiny_sets(96, 32)
    cfg = Train(epochs=epochs, batch_size=16, **(recipe or {}))
    torch.manual_seed(0)
    model = prepare_model(build_model(model_config("lab_cnn", train_set)), torch.device("cpu"),
                          precision)
    inputs = run_inputs(Params(train=cfg), [], ROOT / "stages/train.py", torch.device("cpu"))

    def on_epoch(result):
        if seen is not None:
            seen.append(result.epoch)
        if result.epoch == stop_after:
            raise KeyboardInterrupt

    job = FitJob(model, train_set, val_set, cfg, 0, 64, on_epoch=on_epoch)
    fit_resumable(job, path, inputs, log=lambda line: None)
    return job


def assert_same_state(got: dict, want: dict) -> None:
    """Nested state dicts (tensors, numbers, lists) equal exactly."""
    assert type(got) is type(want)
    if isinstance(want, dict):
        assert got.keys() == want.keys()
        for key in want:
            assert_same_state(got[key], want[key])
    elif isinstance(want, torch.Tensor):
        assert torch.equal(got, want)
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            assert_same_state(a, b)
    else:
        assert got == want


@pytest.mark.parametrize("recipe, precision", [(None, torch.float32), (RECIPE, torch.float16)],
                         ids=["lab", "sgd-onecycle-ema-nfgsm-keep-fp16"])
def test_resumed_fit_equals_uninterrupted_fit(tmp_path, recipe, precision):
    whole = fit_tiny(tmp_path / "a.pt", recipe=recipe, precision=precision)
    with pytest.raises(KeyboardInterrupt, match="resume from epoch 2"):
        fit_tiny(tmp_path / "b.pt", stop_after=1, recipe=recipe, precision=precision)
    seen: list[int] = []
    resumed = fit_tiny(tmp_path / "b.pt", seen=seen, recipe=recipe, precision=precision)
    assert seen == [1, 2, 3]  # the restored epoch is replayed to on_epoch, then 2 and 3 run
    fields = ("epoch", "loss", "val_acc", "robust_val_acc")
    assert [[getattr(r, f) for f in fields] for r in resumed.history] == [
        [getattr(r, f) for f in fields] for r in whole.history]
    assert_same_state(resumed.model.state_dict(), whole.model.state_dict())
    assert_same_state(resumed.state.state_dict(), whole.state.state_dict())
    assert_same_state(resumed.kept_model().state_dict(), whole.kept_model().state_dict())
    if recipe:
        assert resumed.state.scaler.is_enabled()  # fp16: the scaler's state is resumed too


def test_unreadable_checkpoint_means_a_fresh_start(tmp_path):
    path = tmp_path / "train.pt"
    path.write_bytes(b"not a checkpoint")
    lines: list[str] = []
    train_set, val_set = tiny_sets(16, 16)
    job = FitJob(torch.nn.Linear(2, 2), train_set, val_set, Train(), 0, 16)
    history = restore(path, {}, job, log=lines.append)
    assert history == [] and "starting fresh" in lines[0]


def test_fingerprint_covers_the_params_dvc_gives_the_train_stage():
    assert tuple(TRAIN["params"]) == TRAIN_PARAMS
    assert f"--checkpoint {CHECKPOINT}" in TRAIN["cmd"]
    out = next(o for o in TRAIN["outs"] if isinstance(o, dict) and CHECKPOINT in o)[CHECKPOINT]
    assert out["persist"] is True  # dvc repro must not delete it before the rerun


# --- through dvc ------------------------------------------------------------------------------

@pytest.mark.slow
def test_dvc_repro_after_kill_resumes_and_matches_a_fresh_run(tmp_path):
    from conftest import copy_repo, repo_env
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from test_pipeline_dvc import TINY, dvc

    from advlab.experiments.profile import deep_merge

    repo = copy_repo(tmp_path / "repo")
    params = deep_merge(yaml.safe_load((repo / "params.yaml").read_text()), TINY)
    params["train"]["epochs"] = 2
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    env = repo_env(repo)
    pipeline = (repo / "dvc.yaml").read_text()
    script = "python stages/train.py"
    steps = -(-params["data"]["train_size"] // params["train"]["batch_size"])
    (repo / "dvc.yaml").write_text(pipeline.replace(  # held 1 step into epoch 2
        script, f"python tests/held_stage.py step {steps + 1} {HELD} stages/train.py"))
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "train"], cwd=repo, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    wait_for(repo / HELD, proc, timeout=240)
    os.killpg(proc.pid, signal.SIGKILL)  # dvc and the train stage under it
    proc.wait()
    (repo / "dvc.yaml").write_text(pipeline)

    out = dvc(repo, "repro", "train")
    assert "Running stage 'train'" in out
    assert f"resuming from {CHECKPOINT}: epochs 1..1 done" in out
    assert "up to date" in dvc(repo, "status", "train")
    resumed = (repo / "metrics/train.json").read_text(), md5(repo / "models/model.pt")
    events = EventAccumulator(str(repo / "runs/train")).Reload()  # dvc emptied it before
    assert [e.step for e in events.Scalars("accuracy/validation")] == [steps, 2 * steps]

    (repo / CHECKPOINT).unlink()
    out = dvc(repo, "repro", "-f", "train")
    assert "resuming" not in out
    assert ((repo / "metrics/train.json").read_text(), md5(repo / "models/model.pt")) == resumed
