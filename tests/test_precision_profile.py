"""The CI profile with base.precision=bf16 on the CPU, through `dvc exp run`, ends close to fp32.

Close: test accuracy and FGSM accuracy at every eps within 0.03 (30 of the profile's 1000 test
images), the last epoch's training loss within 15%. bf16 keeps 8 significant bits, so every
activation is rounded by up to 0.4%; over 2 epochs of Adam that moves the weights about as much
as another dropout stream would, which changes a few test images' predictions, not the model.
A broken bf16 path (no learning, wrong logits, a gradient that lost its sign) misses these by far:
the profile's test accuracy is ~0.9 and chance is 0.1.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import copy_repo
from conftest import run_in as run

ACCURACY = 0.03
LOSS = 0.15


def profile_metrics(repo: Path, precision: str) -> dict:
    # the test and attack stages (and what they need), without the ensemble: the comparison
    # reads train, test and FGSM; the worst case and the report would only add time
    run(repo, "python", "-m", "advlab.experiments.profile", "ci",
        "-S", f"base.precision={precision}", "-S", "attack.ensemble=[]", "-n", precision,
        "test", "attack")
    metrics = repo / "metrics"
    return {name: json.loads((metrics / f"{name}.json").read_text())
            for name in ("train", "test", "attack")}


@pytest.mark.slow
def test_ci_profile_in_bf16_on_cpu_is_close_to_fp32(tmp_path):
    copy_repo(tmp_path)
    fp32, bf16 = profile_metrics(tmp_path, "fp32"), profile_metrics(tmp_path, "bf16")
    for name, metrics in (("fp32", fp32), ("bf16", bf16)):  # shown with pytest -n 0 -s
        print(name, metrics["train"]["loss"], metrics["test"]["accuracy"],
              metrics["attack"]["fgsm"]["accuracy"])

    assert fp32["test"]["accuracy"] > 0.5  # the comparison is between two models that learned
    assert bf16["test"]["accuracy"] == pytest.approx(fp32["test"]["accuracy"], abs=ACCURACY)
    for eps, accuracy in fp32["attack"]["fgsm"]["accuracy"].items():
        assert bf16["attack"]["fgsm"]["accuracy"][eps] == pytest.approx(accuracy, abs=ACCURACY), eps
    assert bf16["attack"]["fgsm"]["accuracy"]["eps=0"] == bf16["test"]["accuracy"]
    assert bf16["train"]["loss"] == pytest.approx(fp32["train"]["loss"], rel=LOSS)
    assert bf16 != fp32  # bf16 did run: identical metrics would mean autocast never turned on
