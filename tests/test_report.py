"""The report stage on a small run: files written, every eps reported, nothing fetched online."""

from __future__ import annotations

import argparse
import hashlib
import re
import runpy
import shutil
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from conftest import COMMITTED_PARAMS, run_stage_script

from advlab.core.io import write_csv, write_json
from advlab.data.images import ImageSet, load_splits
from advlab.data.synthetic import synthetic_images
from advlab.evaluation.attack_metrics import save_metrics
from advlab.evaluation.classification import classification_report
from advlab.evaluation.robustness import attack_subset, fgsm_sweep
from advlab.models import ModelConfig, build_model, load_model, parameter_table, save_model
from advlab.reporting.figures import accuracy_vs_epsilon, attack_examples, save_png
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
    test_set.save(root / "splits" / "test.pt")
    with warnings.catch_warnings():  # torch.jit is deprecated in favour of torch.export
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.trace(model, torch.rand(1, 3, 16, 16)), root / "elsewhere.pt")

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

    (root / "params.yaml").write_text(COMMITTED_PARAMS)
    return root


def run_report(run: Path, model: str, out: str, metrics: Path | None = None) -> Path:
    """stages/report.py's main in the run folder (it reads params.yaml from there)."""
    main = runpy.run_path(str(ROOT / "stages" / "report.py"))["main"]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(run)
        main(argparse.Namespace(metrics=metrics or run / "metrics", model=run / model,
                                splits=run / "splits",
                                examples=run / "attack_examples.png", out=run / out,
                                tensorboard=run / "runs" / out))
    return run / out


@pytest.fixture(scope="module")
def report_dir(run) -> Path:
    return run_report(run, "model.pt", "reports")


def test_report_of_a_model_trained_elsewhere_names_its_file_and_digests(run, report_dir):
    """model.file names a TorchScript file: the report says which, with its md5 and sha256,
    counts its parameters and shows no training record (metrics/train.csv is another model's)."""
    params = yaml.safe_load((run / "params.yaml").read_text())
    params["model"]["file"] = "elsewhere.pt"
    (run / "params.yaml").write_text(yaml.safe_dump(params))
    try:
        out = run_report(run, "elsewhere.pt", "elsewhere")
    finally:
        (run / "params.yaml").write_text(COMMITTED_PARAMS)
    page = (out / "report.html").read_text()
    data = (run / "elsewhere.pt").read_bytes()
    evaluated = page.split("<h2>Model evaluated</h2>")[1].split("<h2>")[0]
    for shown in (str(run / "elsewhere.pt"), "TorchScript", hashlib.md5(data).hexdigest(),
                  hashlib.sha256(data).hexdigest(), "trained elsewhere"):
        assert shown in evaluated, shown
    assert "<h1>advlab report: elsewhere.pt on cifar10</h1>" in page
    assert "Training" not in page and not (out / "figures" / "training_curves.png").exists()
    total = sum(r[2] for r in parameter_table(build_model(
        ModelConfig("lab_cnn", 3, 16, 10, (0,) * 3, (1,) * 3))))
    assert f"<td>{total:,}</td>" in page.split("<h2>Parameters")[1].split("<h2>")[0]

    trained = (report_dir / "report.html").read_text().split("<h2>Model evaluated</h2>")[1]
    assert "advlab model file" in trained.split("<h2>")[0] and "<h2>Training" in trained


def test_report_of_an_attacked_subset_calls_eps_0_its_clean_accuracy(run, report_dir, tmp_path):
    """attack.max_images: accuracy at eps 0 is that of the attacked images, not the test
    accuracy, and the page says so; with every test image attacked it is the test accuracy."""
    metrics = tmp_path / "metrics"
    shutil.copytree(run / "metrics", metrics)
    subset = attack_subset(load_splits(run / "splits", ("test",))["test"], 12, seed=0)
    save_metrics(metrics, fgsm_sweep(load_model(run / "model.pt"), subset, EPSILONS, 16))
    page = (run_report(run, "model.pt", "subset", metrics) / "report.html").read_text()
    eps0 = read_metrics(metrics).attack["fgsm"][0]["accuracy"]
    assert (f"ε = 0 is the clean accuracy of the 12 attacked test images (attack.max_images of "
            f"the 40) ({eps0:.4f})") in page
    assert "ε = 0 is the test accuracy" not in page
    whole = read_metrics(run / "metrics")
    assert (f"ε = 0 is the test accuracy ({whole.attack['fgsm'][0]['accuracy']:.4f})"
            in (report_dir / "report.html").read_text())


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


def test_accuracy_vs_epsilon_joins_the_points_in_increasing_eps():
    """attack.epsilons may come in any order: each line runs left to right, not back and forth."""
    fig = accuracy_vs_epsilon([0, 0.1, 0.05], {"fgsm": [0.9, 0.2, 0.5], "pgd": [0.9, 0.1, 0.3]})
    lines = fig.axes[0].lines
    for line, expected in zip(lines, ([0.9, 0.5, 0.2], [0.9, 0.3, 0.1]), strict=True):
        assert list(line.get_xdata()) == [0, 0.05, 0.1]
        assert list(line.get_ydata()) == expected


def test_report_without_the_attack_examples_is_one_line_naming_the_file(run, monkeypatch,
                                                                        capsys):
    """attack.json is there but the attack stage stopped before its PNG: one line, no page."""
    monkeypatch.chdir(run)
    with pytest.raises(SystemExit) as exit_:
        run_stage_script(monkeypatch, "report.py", "--metrics", "metrics", "--model", "model.pt",
                         "--splits", "splits", "--examples", "missing.png", "--out", "no_report",
                         "--tensorboard", "runs/no_report")
    assert exit_.value.code == 1
    assert capsys.readouterr().err.strip() == ("report: error: missing.png does not exist: run "
                                               "the stage that writes it (dvc repro)")
    assert not (run / "no_report").exists()
