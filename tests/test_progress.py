"""Live progress and timing: the train stage rewrites its metrics after every epoch, and the
stages record wall time and throughput apart from the metrics that must reproduce."""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
from pathlib import Path

import torch
from test_resume import CHECKPOINT, tiny_sets, workdir

from advlab.core.timing import Stopwatch, throughput
from advlab.training.loop import EpochResult
from advlab.training.metrics import write_train_metrics

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
                     Path("metrics/train.csv").read_text(),
                     json.loads(Path("metrics/train_time.json").read_text()),
                     Path("models/model.pt").exists()))

    monkeypatch.setattr(stage, "log_epoch", snapshot)
    stage.main(argparse.Namespace(splits=Path("data/splits"), model=Path("models/model.pt"),
                                  metrics=Path("metrics"), tensorboard=Path("runs/train"),
                                  checkpoint=Path(CHECKPOINT)))

    final_json = json.loads(Path("metrics/train.json").read_text())
    final_csv = Path("metrics/train.csv").read_text()
    rows = list(csv.DictReader(final_csv.splitlines()))
    assert [epoch for epoch, *_ in seen] == [1, 2, 3]
    train_images = len(tiny_sets()[0])
    for epoch, live_json, live_csv, live_time, model_written in seen:
        assert not model_written  # still training
        assert live_json["epochs"] == epoch
        assert live_json["val_acc"] == float(rows[epoch - 1]["val_acc"])
        assert live_json["best_val_acc"] == max(float(r["val_acc"]) for r in rows[:epoch])
        # the live csv is the final one cut after this epoch's row
        assert live_csv == "".join(final_csv.splitlines(keepends=True)[:epoch + 1])
        # seconds is rounded to the millisecond, images_per_s to 0.1: the rate lies within
        # what those roundings allow (an epoch of the tiny sets can take a few milliseconds)
        seconds, images = live_time["seconds"], train_images * epoch
        assert images / (seconds + 5e-4) - 0.05 <= live_time["images_per_s"] \
            <= images / max(seconds - 5e-4, 1e-9) + 0.05
    assert seen[-1][1] == final_json and seen[-1][2] == final_csv
    assert set(final_json) == {"epochs", "loss", "val_acc", "best_val_acc", "model",
                               "adversarial"}  # no timing among the reproducible metrics


def result(epoch: int, val_acc: float, seconds: float) -> EpochResult:
    return EpochResult(epoch, 1.0 / epoch, val_acc, torch.zeros(3), seconds)


def test_train_time_sums_every_epoch_restored_ones_included(tmp_path):
    history = [result(1, 0.5, 2.0), result(2, 0.7, 3.0), result(3, 0.6, 5.0)]
    write_train_metrics(tmp_path, history, {"model": {"params": 7}}, train_images=100,
                        environment={"torch": "2.9.0"})
    assert json.loads((tmp_path / "train_time.json").read_text()) == {
        "seconds": 10.0, "images_per_s": 30.0, "epoch_seconds": 3.333,
        "environment": {"torch": "2.9.0"}}
    metrics = json.loads((tmp_path / "train.json").read_text())
    assert metrics == {"epochs": 3, "loss": 0.333333, "val_acc": 0.6, "best_val_acc": 0.7,
                       "model": {"params": 7}}


def test_throughput_and_stopwatch():
    assert throughput(2.0, 500) == {"seconds": 2.0, "images_per_s": 250.0}
    assert throughput(0.0, 500) == {"seconds": 0.0, "images_per_s": 0.0}
    with Stopwatch(torch.device("cpu")) as outer:
        with Stopwatch(torch.device("cpu")) as inner:
            sum(range(100_000))
    assert 0 < inner.seconds <= outer.seconds
