"""Live progress and timing: the train stage logs every epoch through DVCLive (a row per epoch,
the summary rewritten atomically), and the stages record wall time and throughput apart from
the metrics that must reproduce."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import pytest
import torch
import yaml
from test_resume import CHECKPOINT, tiny_sets, workdir

from advlab.core import io
from advlab.core.timing import Stopwatch, throughput
from advlab.training.live import TrainLive, log_live_epoch
from advlab.training.loop import EpochResult
from advlab.training.metrics import read_curves, write_train_time

ROOT = Path(__file__).resolve().parents[1]


def load_stage(name: str):
    spec = importlib.util.spec_from_file_location(f"stage_{name}", ROOT / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_stage_metrics_hold_each_finished_epoch_while_training(tmp_path, monkeypatch):
    """The real stage in process; its TensorBoard hook, called after the metrics are written at
    the end of each epoch, reads them there: between that epoch and the next."""
    work = workdir(tmp_path, epochs=3)
    monkeypatch.chdir(work)
    stage = load_stage("train")
    seen = []

    def snapshot(writer, result):
        seen.append((result.epoch, json.loads(Path("metrics/train.json").read_text()),
                     live_files(Path("metrics")),
                     json.loads(Path("metrics/train_time.json").read_text()),
                     Path("models/model.pt").exists()))

    monkeypatch.setattr(stage, "log_epoch", snapshot)
    run_train(stage)

    final_json = json.loads(Path("metrics/train.json").read_text())
    final_files = live_files(Path("metrics"))
    rows = read_curves(Path("metrics"))
    assert [row["epoch"] for row in rows] == [1, 2, 3]  # DVCLive's step is the epoch
    assert set(final_files) == {"params.yaml", "plots/metrics/loss.tsv",
                                "plots/metrics/val_acc.tsv"}  # no DVCLive summary there
    assert [epoch for epoch, *_ in seen] == [1, 2, 3]
    train_images = len(tiny_sets()[0])
    for epoch, live_json, files, live_time, model_written in seen:
        assert not model_written  # still training
        assert live_json["step"] == epoch
        assert live_json["loss"] == rows[epoch - 1]["loss"]
        assert live_json["val_acc"] == rows[epoch - 1]["val_acc"]
        assert live_json["best_val_acc"] == max(r["val_acc"] for r in rows[:epoch])
        # each live table is the final one cut after this epoch's row
        for name, text in files.items():
            final = final_files[name].splitlines(keepends=True)
            assert text == "".join(final if name == "params.yaml" else final[:epoch + 1]), name
        # seconds is rounded to the millisecond, images_per_s to 0.1: the rate lies within
        # what those roundings allow (an epoch of the tiny sets can take a few milliseconds)
        seconds, images = live_time["seconds"], train_images * epoch
        assert images / (seconds + 5e-4) - 0.05 <= live_time["images_per_s"] \
            <= images / max(seconds - 5e-4, 1e-9) + 0.05
    assert seen[-1][1] == final_json and seen[-1][2] == final_files
    assert set(final_json) == {"step", "loss", "val_acc", "best_val_acc", "model",
                               "adversarial"}  # no timing among the reproducible metrics
    assert final_json["model"]["params"] > 0 and final_json["adversarial"]["mode"] == "none"
    assert yaml.safe_load(final_files["params.yaml"]) == {
        "device": "cpu", "precision": "float32", "processes": 1}


def run_train(stage) -> None:
    stage.main(argparse.Namespace(splits=Path("data/splits"), model=Path("models/model.pt"),
                                  metrics=Path("metrics"), tensorboard=Path("runs/train"),
                                  checkpoint=Path(CHECKPOINT)))


def test_a_rerun_after_an_interruption_logs_every_epoch_once(tmp_path, monkeypatch):
    """Interrupted with epoch 2 in the checkpoint but not yet in DVCLive's files, the rerun
    replays the checkpoint's epochs into a fresh DVCLive folder: the same files as one
    uninterrupted run, epochs 1..3 once each."""
    stage = load_stage("train")
    monkeypatch.chdir(workdir(tmp_path / "whole", epochs=3))
    run_train(stage)
    whole = live_files(Path("metrics")), Path("metrics/train.json").read_text()

    monkeypatch.chdir(workdir(tmp_path / "interrupted", epochs=3))
    log_live_epoch = stage.log_live_epoch

    def interrupted_at_epoch_2(live, history, *args):
        if history[-1].epoch == 2:
            raise KeyboardInterrupt
        log_live_epoch(live, history, *args)

    monkeypatch.setattr(stage, "log_live_epoch", interrupted_at_epoch_2)
    with pytest.raises(KeyboardInterrupt, match="epochs 1..2 are saved"):
        run_train(stage)
    assert [r["epoch"] for r in read_curves(Path("metrics"))] == [1]
    monkeypatch.setattr(stage, "log_live_epoch", log_live_epoch)
    run_train(stage)
    assert [r["epoch"] for r in read_curves(Path("metrics"))] == [1, 2, 3]
    assert (live_files(Path("metrics")), Path("metrics/train.json").read_text()) == whole


def live_files(metrics: Path) -> dict[str, str]:
    """DVCLive's folder: {path inside it: text}."""
    folder = metrics / "train"
    return {p.relative_to(folder).as_posix(): p.read_text()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def result(epoch: int, val_acc: float, seconds: float) -> EpochResult:
    return EpochResult(epoch, 1.0 / epoch, val_acc, torch.zeros(3), seconds)


def test_train_time_sums_every_epoch_restored_ones_included(tmp_path):
    history = [result(1, 0.5, 2.0), result(2, 0.7, 3.0), result(3, 0.6, 5.0)]
    write_train_time(tmp_path, history, train_images=100, environment={"torch": "2.9.0"})
    assert json.loads((tmp_path / "train_time.json").read_text()) == {
        "seconds": 10.0, "images_per_s": 30.0, "epoch_seconds": 3.333,
        "environment": {"torch": "2.9.0"}}


def test_summary_holds_the_last_epoch_the_bests_and_the_kept_epoch(tmp_path):
    history = [result(1, 0.5, 2.0), result(2, 0.7, 3.0), result(3, 0.6, 5.0)]
    with TrainLive(tmp_path) as live:
        for done in range(1, 4):
            log_live_epoch(live, history[:done], {"model/params": 7}, keep="best_val")
    assert json.loads((tmp_path / "train.json").read_text()) == {
        "loss": 0.333333, "val_acc": 0.6, "best_val_acc": 0.7, "kept_epoch": 2,
        "model": {"params": 7}, "step": 3}
    assert read_curves(tmp_path) == [{"epoch": 1, "loss": 1.0, "val_acc": 0.5},
                                      {"epoch": 2, "loss": 0.5, "val_acc": 0.7},
                                      {"epoch": 3, "loss": 0.333333, "val_acc": 0.6}]
    assert not (tmp_path / "train" / "metrics.json").exists()


def test_a_run_ended_before_its_first_epoch_ends_dvclive_cleanly(tmp_path):
    with TrainLive(tmp_path):  # Live.end reads the summary back: it must exist, empty
        pass
    assert json.loads((tmp_path / "train.json").read_text()) == {}


def test_a_summary_write_that_fails_leaves_the_previous_summary_whole(tmp_path, monkeypatch):
    """train.json goes through advlab.core.io: a failure (or a kill) before the rename leaves
    the last epoch's file, where DVCLive's own open("w") would leave it empty or cut."""
    history = [result(1, 0.5, 2.0), result(2, 0.7, 3.0)]
    with TrainLive(tmp_path) as live:
        log_live_epoch(live, history[:1], {})
        before = (tmp_path / "train.json").read_text()

        def fail(*_):
            raise OSError("disk full")

        monkeypatch.setattr(io.os, "replace", fail)
        with pytest.raises(OSError, match="disk full"):
            log_live_epoch(live, history, {})
        monkeypatch.undo()
        assert (tmp_path / "train.json").read_text() == before
        assert json.loads(before)["step"] == 1
        assert not list(tmp_path.glob(".*.tmp"))


def test_throughput_and_stopwatch():
    assert throughput(2.0, 500) == {"seconds": 2.0, "images_per_s": 250.0}
    assert throughput(0.0, 500) == {"seconds": 0.0, "images_per_s": 0.0}
    with Stopwatch(torch.device("cpu")) as outer:
        with Stopwatch(torch.device("cpu")) as inner:
            sum(range(100_000))
    assert 0 < inner.seconds <= outer.seconds
