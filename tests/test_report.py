"""The report stage on a small run: files written, every eps reported, nothing fetched online."""

from __future__ import annotations

import argparse
import re
import runpy
import shutil
from pathlib import Path

import pytest
import torch

from advlab.core.io import write_csv, write_json
from advlab.data.images import ImageSet
from advlab.data.synthetic import synthetic_images
from advlab.evaluation.attack_metrics import save_metrics
from advlab.evaluation.classification import classification_report
from advlab.evaluation.robustness import fgsm_sweep
from advlab.models import ModelConfig, build_model, parameter_table, save_model
from advlab.reporting.figures import attack_examples, save_png
from advlab.reporting.report import read_metrics
from advlab.training.live import TrainLive, log_live_epoch
from advlab.training.loop import EpochResult

ROOT = Path(__file__).resolve().parents[1]
EPSILONS = (0.0, 0.05, 0.125)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TRAINED = ((1, 2.1, 0.2), (2, 1.7, 0.4))  # epoch, loss, val_acc


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """What train, test and attack leave behind, for an untrained model on 40 16x16 images."""
    root = tmp_path_factory.mktemp("run")
    big = synthetic_images(40, seed=3)
    test_set = ImageSet(big.images[:, :, ::2, ::2].contiguous(), big.labels, big.classes)
    torch.manual_seed(0)
    model = build_model(ModelConfig("lab_cnn", 3, 16, 10, (0.3,) * 3, (0.2,) * 3)).eval()
    save_model(root / "model.pt", model)

    metrics = root / "metrics"
    with TrainLive(metrics) as live:  # the train stage's DVCLive files
        history = [EpochResult(e, loss, acc, torch.zeros(1)) for e, loss, acc in TRAINED]
        for done in (1, 2):
            log_live_epoch(live, history[:done], {})
    report = classification_report(model, test_set, batch_size=16)
    write_json(metrics / "test.json", {k: report[k] for k in ("accuracy", "per_class")})
    write_csv(metrics / "confusion.csv", ["actual", "predicted"],
              [(test_set.classes[a], test_set.classes[p]) for a, p in
               zip(test_set.labels.tolist(), report["predictions"].tolist(), strict=True)])
    result = fgsm_sweep(model, test_set, EPSILONS, batch_size=16)
    save_metrics(metrics, result)
    save_png(attack_examples(result, test_set.classes), root / "attack_examples.png")

    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    return root


@pytest.fixture(scope="module")
def report_dir(run) -> Path:
    """Runs stages/report.py's main in the run folder (it reads params.yaml from there)."""
    main = runpy.run_path(str(ROOT / "stages" / "report.py"))["main"]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(run)
        main(argparse.Namespace(metrics=run / "metrics", model=run / "model.pt",
                                examples=run / "attack_examples.png", out=run / "reports",
                                tensorboard=run / "runs" / "report"))
    return run / "reports"


def test_report_writes_the_page_and_every_figure(report_dir):
    assert (report_dir / "report.html").is_file()
    for name in ("training_curves", "accuracy_vs_epsilon", "confusion_matrix", "attack_examples"):
        assert (report_dir / "figures" / f"{name}.png").read_bytes().startswith(PNG_MAGIC), name


def test_report_lists_every_eps_the_params_and_the_parameter_arithmetic(run, report_dir):
    page = (report_dir / "report.html").read_text()
    attack_section = page.split("<h2>Attacks")[1]
    attack_rows = re.findall(r"<tr><td>([0-9.]+)</td><td>([0-9.]+)</td>", attack_section)
    assert [float(eps) for eps, _ in attack_rows[:len(EPSILONS)]] == list(EPSILONS)
    metrics = read_metrics(run / "metrics")
    assert metrics.train == [dict(zip(("epoch", "loss", "val_acc"), row, strict=True))
                             for row in TRAINED]  # DVCLive's tables, joined by epoch
    reported = [float(acc) for _, acc in attack_rows[:len(EPSILONS)]]
    assert reported == pytest.approx([r["accuracy"] for r in metrics.attack["fgsm"]], abs=5e-5)
    assert reported[0] == pytest.approx(metrics.test_accuracy, abs=5e-5)
    rows = parameter_table(build_model(ModelConfig("lab_cnn", 3, 16, 10, (0,) * 3, (1,) * 3)))
    for name, formula, count in rows:
        assert f"<td>{name}</td><td>{formula}</td><td>{count:,}</td>" in page
    assert f"{sum(r[2] for r in rows):,}" in page
    for key in ("train.lr", "evaluate.batch_size", "attack.epsilons"):
        assert f"<td>{key}</td>" in page
    for name in metrics.classes:
        assert f"<td>{name}</td>" in page


def test_report_opens_offline(report_dir):
    page = (report_dir / "report.html").read_text()
    sources = re.findall(r"""(?:src|href)\s*=\s*["']?([^"' >]+)""", page, flags=re.IGNORECASE)
    assert len(sources) == 4 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "http" not in re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)
    assert "@import" not in page and "url(" not in page
