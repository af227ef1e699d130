"""A data.source folder outside the repository is a dependency DVC cannot watch: the download
stage runs on every repro, and what comes after it reruns only when the data changed."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from conftest import copy_repo
from test_pipeline_dvc import dvc

from advlab.data.formats import CIFAR_DIR, md5, write_cifar_batches
from advlab.data.images import load_splits
from advlab.data.synthetic import synthetic_images
from advlab.experiments.profile import deep_merge


@pytest.mark.slow
def test_edited_source_folder_reruns_split_and_an_unchanged_one_does_not(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    source = tmp_path / "cifar"  # a CIFAR-format subset, as data.verify: false documents
    write_cifar_batches(source / CIFAR_DIR, synthetic_images(60, 1), synthetic_images(20, 2))
    params = deep_merge(yaml.safe_load((repo / "params.yaml").read_text()), {"data": {
        "dataset": "cifar10", "source": str(source), "verify": False,
        "train_size": 40, "val_size": 10}})
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    split = repo / "data/splits/test.pt"

    out = dvc(repo, "repro", "split")
    assert "Running stage 'download'" in out and "Running stage 'split'" in out
    first = md5(split)

    out = dvc(repo, "repro", "split")  # nothing changed: download looks, split stays
    assert "Running stage 'download'" in out and "Running stage 'split'" not in out
    assert md5(split) == first
    assert json.loads(dvc(repo, "status", "--json", "download", "split")) == {
        "download": ["always changed"]}

    edited = synthetic_images(20, 3)
    write_cifar_batches(source / CIFAR_DIR, synthetic_images(60, 1), edited)
    out = dvc(repo, "repro", "split")
    assert "Running stage 'split'" in out
    assert torch.equal(load_splits(repo / "data/splits", ("test",))["test"].images,
                       edited.images)
