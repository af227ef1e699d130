"""params.yaml is validated once, up front: every bad value names its key, the value and what is
allowed, and a stage given one exits non-zero within seconds without touching its outputs."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml
from conftest import COMMITTED_PARAMS, run_stage_script
from pydantic import ValidationError

from advlab.attacks.registry import ATTACKS
from advlab.params import Params, load_params, parse_params, schema_text
from advlab.params.fields import ParamsError

ROOT = Path(__file__).resolve().parents[1]

BAD = {  # case: (params.yaml overrides, the key named, the bad value as shown)
    "unknown section": ({"trian": {"epochs": 1}}, "trian", "trian"),
    "unknown key": ({"train": {"learning_rate": 0.1}}, "train.learning_rate", "learning_rate"),
    "section not a mapping": ({"train": 5}, "train", "5"),
    "lr zero": ({"train": {"lr": 0}}, "train.lr", "0"),
    "lr negative": ({"train": {"lr": -0.001}}, "train.lr", "-0.001"),
    "lr not a number": ({"train": {"lr": "fast"}}, "train.lr", "'fast'"),
    "lr infinite": ({"train": {"lr": "inf"}}, "train.lr", "inf"),
    "epochs zero": ({"train": {"epochs": 0}}, "train.epochs", "0"),
    "epochs negative": ({"train": {"epochs": -3}}, "train.epochs", "-3"),
    "epochs fractional": ({"train": {"epochs": 2.5}}, "train.epochs", "2.5"),
    "epochs boolean": ({"train": {"epochs": True}}, "train.epochs", "True"),
    "batch size zero": ({"train": {"batch_size": 0}}, "train.batch_size", "0"),
    "batch size negative": ({"train": {"batch_size": -32}}, "train.batch_size", "-32"),
    "eval batch size zero": ({"evaluate": {"batch_size": 0}}, "evaluate.batch_size", "0"),
    "weight decay negative": ({"train": {"weight_decay": -1}}, "train.weight_decay", "-1"),
    "eps list empty": ({"attack": {"epsilons": []}}, "attack.epsilons", "[]"),
    "eps not a list": ({"attack": {"epsilons": 0.1}}, "attack.epsilons", "0.1"),
    "eps not numeric": ({"attack": {"epsilons": [0, "big"]}}, "attack.epsilons", "'big'"),
    "eps negative": ({"attack": {"epsilons": [0, -0.1]}}, "attack.epsilons", "-0.1"),
    "fgsm in the ensemble": ({"attack": {"ensemble": ["apgd_ce", "fgsm"]}}, "attack.ensemble",
                             "'fgsm'"),
    "eps above 1": ({"attack": {"epsilons": [0, 1.5]}}, "attack.epsilons", "1.5"),
    "val size exceeds cifar10": ({"data": {"train_size": 45000, "val_size": 10000}},
                                 "data.train_size + data.val_size", "55000"),
    "val size exceeds fashion_mnist": (
        {"data": {"dataset": "fashion_mnist", "train_size": 1000, "val_size": 60000}},
        "data.train_size + data.val_size", "61000"),
    "val size exceeds synthetic": (
        {"data": {"dataset": "synthetic", "synthetic_train": 100, "train_size": 10,
                  "val_size": 100}}, "data.train_size + data.val_size", "110"),
    "val size negative": ({"data": {"val_size": -1}}, "data.val_size", "-1"),
    "no validation to keep the best of": (
        {"data": {"val_size": 0}, "train": {"keep": "best_val"}}, "data.val_size", "0"),
    "no validation to validate robustly on": (
        {"data": {"val_size": 0}, "train": {"robust_val_images": 10}}, "data.val_size", "0"),
    "unknown model": ({"train": {"model": "resnet50"}}, "train.model", "'resnet50'"),
    "unknown dataset": ({"data": {"dataset": "mnist"}}, "data.dataset", "'mnist'"),
    "unknown device": ({"base": {"device": "tpu"}}, "base.device", "'tpu'"),
    "malformed cuda device": ({"base": {"device": "cuda:x"}}, "base.device", "'cuda:x'"),
    "device not a string": ({"base": {"device": 0}}, "base.device", "0"),
    "seed negative": ({"base": {"seed": -1}}, "base.seed", "-1"),
    "source not a string": ({"data": {"source": 5}}, "data.source", "5"),
    "source null, once 'download'": ({"data": {"source": None}}, "data.source", "None"),
    "source empty": ({"data": {"source": ""}}, "data.source", "''"),
    "verify not a boolean": ({"data": {"verify": "yes"}}, "data.verify", "'yes'"),
}


@pytest.mark.parametrize("overrides, key, shown", BAD.values(), ids=BAD.keys())
def test_bad_value_names_key_value_and_what_is_allowed(overrides, key, shown):
    with pytest.raises(ParamsError) as caught:
        parse_params(overrides)
    message = str(caught.value)
    assert key in message and shown in message
    assert "expected" in message or "known keys" in message


def test_the_repository_params_are_valid_and_the_defaults():
    assert parse_params(yaml.safe_load(COMMITTED_PARAMS)) == Params()


def test_yaml_1_1_exponent_strings_are_read_as_numbers():
    text = "train:\n  lr: 1e-3\nattack:\n  epsilons: [0, 5e-2]\n"
    assert yaml.safe_load(text)["train"]["lr"] == "1e-3"  # what YAML 1.1 makes of it
    params = parse_params(yaml.safe_load(text))
    assert params.train.lr == 0.001 and params.attack.epsilons == (0.0, 0.05)


def test_other_data_sizes_are_checked_by_the_split_not_here():
    """With verify off the official set's size comes from the files (see test_data)."""
    assert parse_params({"data": {"train_size": 45000, "val_size": 10000, "verify": False}})


def test_missing_or_malformed_file_is_a_params_error(tmp_path):
    with pytest.raises(ParamsError, match="does not exist"):
        load_params(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(tmp_path / "params.yaml")


STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", STAGES)
def test_stage_with_bad_params_exits_1_and_touches_no_output(tmp_path, monkeypatch, capsys,
                                                               stage):
    """Each stage's dvc.yaml command, run (in process) on a params.yaml with one bad value: it
    exits 1 with one line naming the key, and leaves a pre-existing output byte for byte."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": {"lr": -0.5}}))
    outputs = []
    for entry in [*STAGES[stage].get("outs", []), *STAGES[stage].get("metrics", [])]:
        path = tmp_path / (next(iter(entry)) if isinstance(entry, dict) else entry)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.suffix:  # a folder output
            path.mkdir()
            path = path / "kept"
        path.write_text("the previous run's output")
        outputs.append(path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))

    python, script, *args = shlex.split(STAGES[stage]["cmd"])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        run_stage_script(monkeypatch, Path(script).name, *args)
    assert exit_.value.code == 1
    assert capsys.readouterr().err == (
        f"{stage}: error: params: train.lr = -0.5 is not allowed; expected a finite number > 0\n")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert all(p.read_text() == "the previous run's output" for p in outputs)


def test_committed_json_schema_is_the_models():
    """params.schema.json (what an editor checks params.yaml against) is regenerated by
    `python -m advlab.params --schema` whenever a param changes."""
    assert (ROOT / "params.schema.json").read_text() == schema_text()
    assert COMMITTED_PARAMS.startswith(
        "# yaml-language-server: $schema=params.schema.json\n")


def test_json_schema_accepts_the_defaults_and_refuses_what_the_model_refuses():
    schema = json.loads(schema_text())
    train = schema["$defs"]["Train"]
    assert train["additionalProperties"] is False
    assert train["properties"]["lr"]["exclusiveMinimum"] == 0
    assert schema["$defs"]["Attack"]["properties"]["methods"]["items"]["enum"] == list(ATTACKS)
    assert set(schema["properties"]) == set(Params.model_fields)


def test_params_are_frozen():
    params = Params()
    with pytest.raises(ValidationError):
        params.train.lr = 0.1  # type: ignore[misc]


@pytest.mark.parametrize("file, trained_here", [
    ("models/model.pt", True), ("./models/model.pt", True), ("models/../models/model.pt", True),
    ("elsewhere/model.pt", False), ("models/model.pt.bak", False)])
def test_the_train_stage_model_is_known_however_its_path_is_written(file, trained_here):
    assert parse_params({"model": {"file": file}}).model.trained_here is trained_here
