"""The trained model is declared as a DVC model-registry artifact."""

from pathlib import Path

import yaml
from dvc.repo import Repo

REPO = Path(__file__).resolve().parents[1]


def test_model_artifact_is_the_train_stage_output():
    artifacts = Repo(str(REPO)).artifacts.read()["dvc.yaml"]  # DVC's own parser and checks
    model = artifacts["advlab-cnn"]
    assert (model.type, model.path) == ("model", "models/model.pt")
    assert model.desc and model.labels
    outs = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["train"]["outs"]
    assert model.path in outs
