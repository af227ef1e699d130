"""data.source is a dependency of the download stage: DVC hashes the folder it names, so
`dvc status` is clean after a run and a changed file there reruns download and what follows.
Its default, the repository's placeholder source/, downloads the dataset while it holds none of
the dataset's files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torchvision.datasets.utils
import yaml
from conftest import ROOT, copy_repo
from test_datasets import small_official_archive
from test_pipeline_dvc import dvc

from advlab.data import fetch as fetching
from advlab.data.fetch import CIFAR_URL, fetch
from advlab.data.formats import CIFAR_DIR, DatasetError, read_raw, write_cifar_batches
from advlab.data.images import load_splits
from advlab.data.synthetic import synthetic_images
from advlab.experiments.profile import deep_merge
from advlab.params.data import DEFAULT_SOURCE, Data

UP_TO_DATE = "Data and pipelines are up to date.\n"


def test_the_default_folder_downloads_until_it_holds_the_dataset(tmp_path, monkeypatch):
    """The placeholder holding only its README is what null was: the official archive is
    downloaded. Once it holds the dataset's files they are copied, and nothing is downloaded;
    any other folder must hold them all."""
    monkeypatch.chdir(tmp_path)  # the default is relative: a stage runs in the repository root
    default = tmp_path / DEFAULT_SOURCE
    default.mkdir()
    shutil.copy(ROOT / DEFAULT_SOURCE / "README.md", default)
    mirror = small_official_archive(tmp_path / "mirror", monkeypatch)
    downloads = []

    def download_url(url, root, filename, md5):  # torchvision's, offline
        downloads.append(url)
        shutil.copyfile(mirror, Path(root) / filename)

    monkeypatch.setattr(fetching, "_network_reachable", lambda url, timeout=5.0: True)
    monkeypatch.setattr(torchvision.datasets.utils, "download_url", download_url)
    fetch(tmp_path / "downloaded", Data(dataset="cifar10"))
    assert downloads == [CIFAR_URL]
    assert len(read_raw(tmp_path / "downloaded", "cifar10", verify=True)[0]) == 50

    write_cifar_batches(default, synthetic_images(30, 4), synthetic_images(10, 5))
    fetch(tmp_path / "copied", Data(dataset="cifar10", verify=False))
    assert downloads == [CIFAR_URL]
    assert len(read_raw(tmp_path / "copied", "cifar10", verify=False)[0]) == 30

    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(DatasetError, match=f"data.source: {other / 'data_batch_1'} is missing"):
        fetch(tmp_path / "raw", Data(dataset="cifar10", source=str(other)))


def repro_ran(repo, *targets: str) -> set[str]:
    out = dvc(repo, "repro", *targets)
    return {stage for stage in ("download", "split") if f"Running stage '{stage}'" in out}


@pytest.mark.slow
def test_status_is_clean_after_a_run_and_an_edited_source_file_reruns_download(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    params = deep_merge(yaml.safe_load((repo / "params.yaml").read_text()), {"data": {
        "dataset": "synthetic", "synthetic_train": 60, "synthetic_test": 20,
        "train_size": 40, "val_size": 10}})
    (repo / "params.yaml").write_text(yaml.safe_dump(params))

    # data.source at its default, the placeholder folder: a valid pipeline, clean once run
    assert params["data"]["source"] == DEFAULT_SOURCE
    assert repro_ran(repo, "split") == {"download", "split"}
    assert dvc(repo, "status", "download", "split") == UP_TO_DATE
    assert repro_ran(repo, "split") == set()

    # a CIFAR-format subset outside the repository, as data.verify: false documents
    source = tmp_path / "cifar"
    write_cifar_batches(source / CIFAR_DIR, synthetic_images(60, 1), synthetic_images(20, 2))
    out = dvc(repo, "exp", "run", "-S", "data.dataset=cifar10", "-S", f"data.source={source}",
              "-S", "data.verify=false", "split")
    assert "Running stage 'download'" in out and "Running stage 'split'" in out
    assert dvc(repo, "status", "download", "split") == UP_TO_DATE
    assert repro_ran(repo, "split") == set()

    edited = synthetic_images(20, 3)
    write_cifar_batches(source / CIFAR_DIR, synthetic_images(60, 1), edited)
    assert json.loads(dvc(repo, "status", "--json", "download", "split")) == {
        "download": [{"changed deps": {str(source): "modified"}}]}
    assert repro_ran(repo, "split") == {"download", "split"}
    assert torch.equal(load_splits(repo / "data/splits", ("test",))["test"].images,
                       edited.images)
    assert dvc(repo, "status", "download", "split") == UP_TO_DATE
