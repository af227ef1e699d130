import gzip

import numpy as np
import pytest
import torch

from advlab import datasets
from advlab.datasets import (
    CIFAR_DIR,
    DatasetError,
    fetch,
    read_raw,
    synthetic_images,
    write_cifar_batches,
)
from advlab.params import Data


def test_synthetic_data_round_trips_through_the_cifar_loader(tmp_path):
    fetch(tmp_path, Data(dataset="synthetic", synthetic_train=500, synthetic_test=100,
                         train_size=400, val_size=100))
    assert sorted(p.name for p in (tmp_path / CIFAR_DIR).iterdir()) == [
        "batches.meta", *[f"data_batch_{i}" for i in range(1, 6)], "test_batch"]
    train, test = read_raw(tmp_path, "synthetic", verify=True)
    assert (len(train), len(test)) == (500, 100)
    assert train.shape == (3, 32, 32) and train.images.dtype == torch.uint8
    expected = synthetic_images(500, datasets.SYNTHETIC_SEED)
    assert torch.equal(train.images, expected.images) and torch.equal(train.labels, expected.labels)
    assert torch.bincount(train.labels).tolist() == [50] * 10


def test_cifar_source_folder_is_copied_and_md5_checked(tmp_path):
    source = tmp_path / "src"
    small = synthetic_images(60, seed=3)
    write_cifar_batches(source / CIFAR_DIR, small, small)
    with pytest.raises(DatasetError, match="md5"):
        fetch(tmp_path / "raw", Data(dataset="cifar10", source=str(source)))
    fetch(tmp_path / "raw", Data(dataset="cifar10", source=str(source), verify=False))
    train, test = read_raw(tmp_path / "raw", "cifar10", verify=False)
    assert len(train) == 60 and len(test) == 60  # sizes come from the files


def _write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_reads_debian_gz_files(tmp_path):
    source = tmp_path / "fashion"
    source.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 10)):
        _write_idx(source / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(source / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    with pytest.raises(DatasetError, match="md5"):
        fetch(tmp_path / "raw", Data(dataset="fashion_mnist", source=str(source)))
    fetch(tmp_path / "raw", Data(dataset="fashion_mnist", source=str(source), verify=False))
    train, test = read_raw(tmp_path / "raw", "fashion_mnist", verify=False)
    assert train.images.shape == (30, 1, 28, 28) and len(test) == 10
    assert train.classes[0] == "t-shirt/top"


def test_offline_without_archive_fails_fast_with_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "_network_reachable", lambda host, timeout=5.0: False)
    with pytest.raises(DatasetError) as err:
        fetch(tmp_path, Data(dataset="cifar10"))
    message = str(err.value)
    assert "cifar-10-python.tar.gz" in message and "advlab.profile" in message


def test_fetch_removes_other_datasets_files(tmp_path):
    (tmp_path / "FashionMNIST").mkdir()
    fetch(tmp_path, Data(dataset="synthetic", synthetic_train=50, synthetic_test=10,
                         train_size=40, val_size=10))
    assert not (tmp_path / "FashionMNIST").exists()


@pytest.mark.skipif(not (datasets.Path("/usr/share/datasets/fashion-mnist").is_dir()),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_debian_fashion_mnist_matches_the_official_md5s(tmp_path):
    fetch(tmp_path, Data(dataset="fashion_mnist", source="/usr/share/datasets/fashion-mnist"))
    train, test = read_raw(tmp_path, "fashion_mnist", verify=True)
    assert (len(train), len(test)) == (60_000, 10_000)
