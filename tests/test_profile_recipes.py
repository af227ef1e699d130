"""The recipe profiles (profiles/fast.yaml, fast_at.yaml, trades.yaml) each run offline through
`python -m advlab.experiments.profile NAME` (`dvc exp run`), on generated data with tiny sizes: the
run's params, model, train.json and attack.json are the recipe's. fast keeps its data.val_size 0, so
the whole pipeline (train, test, attack, report) and the gate run once without validation. Each
run is also the real `dvc exp run` that trains one of the new models (fast_cnn,
preact_resnet18, wide_resnet) through the whole pipeline: model file, train.json and test.json.

Sizes: a few dozen images, a step or two per epoch (the checks are bookkeeping, not learning;
preact_resnet18 costs about a GFLOP per training image on the CPU). """

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from conftest import copy_repo, repo_env

from advlab.models import load_model
from advlab.training.metrics import read_curves

TINY = ["-S", "base.device=cpu", "-S", "data.dataset=synthetic",
        "-S", "data.synthetic_train=100", "-S", "data.synthetic_test=20",
        "-S", "train.epochs=1", "-S", "attack.max_images=10", "-S", "attack.epsilons=[0,0.03]",
        "-S", "attack.apgd_ce.steps=2", "-S", "attack.apgd_t.steps=2",
        "-S", "attack.apgd_t.targets=1", "-S", "attack.fab_t.steps=2",
        "-S", "attack.fab_t.targets=1", "-S", "attack.square.queries=5"]
ROBUST_VAL = ["-S", "data.train_size=40", "-S", "data.val_size=20",
              "-S", "train.robust_val_images=10", "-S", "train.robust_val_steps=2"]
RECIPES = {  # profile: its tiny sizes, and what its run must show
    "fast": (["-S", "data.train_size=100", "-S", "train.widths=[8,16]"],
             {"model": "fast_cnn", "optimizer": "sgd", "nesterov": True,
              "schedule": "onecycle", "label_smoothing": 0.2, "decay_norm_and_bias": False,
              "adversarial": "none"}),
    "fast_at": ([*ROBUST_VAL, "-S", "train.batch_size=20"],
                {"model": "preact_resnet18", "optimizer": "sgd", "schedule": "cyclic",
                 "lr": 0.2, "weight_decay": 0.0005, "adversarial": "fgsm_rs"}),
    "trades": ([*ROBUST_VAL, "-S", "train.depth=10", "-S", "train.width=1",
                "-S", "train.adv_steps=2"],
               {"model": "wide_resnet", "optimizer": "sgd", "schedule": "piecewise",
                "lr": 0.1, "adversarial": "trades", "trades_beta": 6.0}),
}


def run_recipe(repo, name: str, sizes: list[str]) -> tuple[dict, dict, dict]:
    done = subprocess.run([sys.executable, "-m", "advlab.experiments.profile", name, *TINY, *sizes],
                          cwd=repo, env=repo_env(repo), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    read = lambda path: json.loads((repo / path).read_text())  # noqa: E731
    params = yaml.safe_load((repo / "params.yaml").read_text())
    return params, read("metrics/train.json"), read("metrics/attack.json")


@pytest.mark.slow
def test_each_recipe_profile_runs_through_dvc_exp_run(tmp_path):
    repo = copy_repo(tmp_path)
    for name, (sizes, recipe) in RECIPES.items():
        params, train, attack = run_recipe(repo, name, sizes)
        assert {key: params["train"][key] for key in recipe} == recipe, name
        model = load_model(repo / "models/model.pt")
        assert model.config.arch == recipe["model"], name
        assert train["model"]["params"] == sum(p.numel() for p in model.parameters()), name
        assert train["adversarial"]["mode"] == recipe["adversarial"], name
        assert 0 <= json.loads((repo / "metrics/test.json").read_text())["accuracy"] <= 1, name
        assert 0 <= attack["worst_case"]["accuracy"]["eps=0.03"] <= 1, name
        assert (repo / "reports/report.html").is_file(), name
        if name == "fast":  # all of the training images, no validation
            assert model.config.options["widths"] == [8, 16]
            assert params["data"]["val_size"] == 0 and "val_acc" not in train
            assert list(read_curves(repo / "metrics")[0]) == ["epoch", "loss"]
            gate = subprocess.run([sys.executable, "-m", "advlab.experiments.gate"], cwd=repo,
                                  env=repo_env(repo), capture_output=True, text=True)
            assert gate.returncode == 1 and "MISSING" in gate.stdout, gate.stdout + gate.stderr
        else:
            assert 0 <= train["robust_val_acc"] <= 1 and 0 <= train["val_acc"] <= 1, name
    assert model.config.options == {"depth": 10, "width": 1}
