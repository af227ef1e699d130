"""Each stage's `params:` in dvc.yaml are exactly the keys its code reads (the params twin of
tests/test_closure.py): every stage runs in process on tiny data while the params record each
key read, and the record is compared with dvc.yaml."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest
import torch
import yaml
from conftest import run_stage_script, stage_argv

from advlab.data.images import ImageSet
from advlab.models import ModelConfig, build_model
from advlab.models.registry import arch_options
from advlab.params import Params, load_params
from advlab.params.attack import METHODS
from advlab.params.fields import leaf_keys, recording_reads
from advlab.params.train import Train

ROOT = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
BUDGET = {"steps": 2}
# Every attack runs (each reads its own section), on a few images with a cut budget
TINY = {"data": {"dataset": "synthetic", "synthetic_train": 240, "synthetic_test": 40,
                 "train_size": 160, "val_size": 40},
        "train": {"epochs": 1}, "evaluate": {"batch_size": 64},
        "attack": {"epsilons": [0.0, 0.1], "methods": list(METHODS),
                   "max_images": 8, "pgd": BUDGET, "apgd_ce": BUDGET,
                   "apgd_t": {**BUDGET, "targets": 2}, "fab_t": {**BUDGET, "targets": 2},
                   "square": {"queries": 4}}}
# architectures with options, tiny: a state_dict of each makes the stages read them
STATE_DICTS = {"wide_resnet": {"depth": 10, "width": 1},
               "fast_cnn": {"widths": [8, 8], "whiten": False}}


def declared(stage: str) -> set[str]:
    """The keys dvc.yaml's `params:` of `stage` covers (a section covers every key in it)."""
    entries = STAGES[stage].get("params", [])
    return {key for key in leaf_keys(Params)
            if any(key == entry or key.startswith(f"{entry}.") for entry in entries)}


def run_recorded(monkeypatch: pytest.MonkeyPatch, stage: str) -> set[str]:
    """The keys the stage's dvc.yaml command reads, run in this process."""
    python, script, *args = stage_argv(STAGES[stage]["cmd"], load_params().model_dump())
    with recording_reads() as reads:
        run_stage_script(monkeypatch, Path(script).name, *args)
    return reads


@pytest.fixture
def pipeline_reads(tmp_path, monkeypatch) -> dict[str, set[str]]:
    """Every stage on tiny synthetic data, then download again on a CIFAR-format folder named
    by data.source (the branch that reads data.verify), and test, attack and report on a
    state_dict of each architecture with options; the keys each stage read."""
    handler = signal.getsignal(signal.SIGTERM)  # run_stage installs its own
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TINY))
    reads = {stage: run_recorded(monkeypatch, stage) for stage in STAGES}

    batches = next((tmp_path / "data/raw").rglob("cifar-10-batches-py"))
    shutil.copytree(batches, tmp_path / "elsewhere" / batches.name)
    other = {**TINY, "data": {**TINY["data"], "dataset": "cifar10", "verify": False,
                              "source": str(tmp_path / "elsewhere")}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(other))
    reads["download"] |= run_recorded(monkeypatch, "download")

    # A state_dict as model.file: test, attack and report build train.model with its options
    test_set = ImageSet.load(tmp_path / "data/splits/test.pt")
    for arch, options in STATE_DICTS.items():
        train = Train(model=arch, **options)
        model = build_model(ModelConfig(arch, 3, 32, len(test_set.classes), (0.5,) * 3,
                                        (0.25,) * 3, arch_options(arch, train)))
        torch.save(model.state_dict(), tmp_path / "weights.pt")
        external = {**TINY, "model": {"file": "weights.pt"},
                    "train": {**TINY["train"], "model": arch, **options}}
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(external))
        for stage in ("test", "attack", "report"):
            reads[stage] |= run_recorded(monkeypatch, stage)
    signal.signal(signal.SIGTERM, handler)
    return reads


@pytest.mark.slow
def test_each_stage_reads_exactly_the_params_dvc_yaml_lists(pipeline_reads):
    differ = []
    for stage, reads in pipeline_reads.items():
        missing, extra = sorted(reads - declared(stage)), sorted(declared(stage) - reads)
        if missing or extra:
            differ.append(f"dvc.yaml stage {stage!r}: its code reads {missing} that `params:` "
                          f"does not list, and `params:` lists {extra} that it never reads")
    assert not differ, "\n".join(differ)


def test_reads_are_recorded_by_key_from_attributes_and_dumps():
    params = Params()
    square_keys = {f"attack.square.{key}" for key in type(params.attack.square).model_fields}
    with recording_reads() as reads:
        assert params.train.lr > 0 and params.attack.pgd.steps > 0
        params.attack.square.model_dump()
        Params.model_validate({"data": {"dataset": "synthetic"}})  # validating reads none
    assert reads == {"train.lr", "attack.pgd.steps"} | square_keys
    assert params.base.seed == 0  # nothing is recorded outside recording_reads()
    assert reads == {"train.lr", "attack.pgd.steps"} | square_keys
