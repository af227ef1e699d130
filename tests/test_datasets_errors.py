"""Bad data files: each gives a DatasetError (or a split-file error) naming the file and what is
wrong; never a silently smaller dataset, never code run from a pickle."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import idx_bytes, patch_official_md5s

from advlab.data import fetch as fetching
from advlab.data.fetch import CIFAR_ARCHIVE, fetch, fetch_cifar10
from advlab.data.formats import (
    CIFAR_DIR,
    DatasetError,
    md5,
    read_cifar,
    read_fashion_mnist,
    write_cifar_batches,
)
from advlab.data.images import load_splits
from advlab.data.synthetic import synthetic_images
from advlab.params.data import Data


@pytest.fixture
def cifar(tmp_path) -> Path:
    """A tiny, valid folder in the CIFAR-10 python format: 50 training images, 10 test."""
    folder = tmp_path / CIFAR_DIR
    write_cifar_batches(folder, synthetic_images(50, seed=1), synthetic_images(10, seed=2))
    return folder


def rewrite_batch(path: Path, **entries: object) -> None:
    with open(path, "rb") as f:
        blob = pickle.load(f, encoding="latin1")  # our own file, written just now
    blob.update(entries)
    with open(path, "wb") as f:
        pickle.dump(blob, f, protocol=2)


def read_error(folder: Path, verify: bool = False) -> str:
    with pytest.raises(DatasetError) as caught:
        read_cifar(folder, verify)
    return str(caught.value)


def test_the_tiny_folder_reads(cifar):
    train, test = read_cifar(cifar, verify=False)
    assert (len(train), len(test)) == (50, 10)


def test_truncated_batch(cifar):
    path = cifar / "data_batch_3"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert read_error(cifar).startswith(f"{path} is not a readable CIFAR batch")


def test_malformed_batch(cifar):
    (cifar / "data_batch_2").write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    assert f"{cifar / 'data_batch_2'} is not a CIFAR batch (a dict)" in read_error(cifar)
    (cifar / "data_batch_2").write_bytes(pickle.dumps({"data": "x"}, protocol=2))
    assert f"{cifar / 'data_batch_2'} lacks the 'data' or 'labels' entry" in read_error(cifar)


def test_wrong_image_shape(cifar):
    rewrite_batch(cifar / "data_batch_1", data=np.zeros((10, 3 * 28 * 28), np.uint8))
    message = read_error(cifar)
    assert str(cifar / "data_batch_1") in message and "3072 pixels" in message
    assert "(10, 2352)" in message


def test_labels_out_of_range(cifar):
    rewrite_batch(cifar / "test_batch", labels=[0, 1, 2, 3, 4, 5, 6, 7, 8, 10])
    message = read_error(cifar)
    assert message.startswith(f"{cifar / 'test_batch'}: labels must lie in 0..9")
    assert "got 0..10" in message


def test_labels_not_one_per_image(cifar):
    rewrite_batch(cifar / "data_batch_5", labels=[0, 1])
    assert f"{cifar / 'data_batch_5'}: expected 10 integer labels" in read_error(cifar)


@pytest.mark.parametrize("verify", [False, True])
def test_missing_batch(cifar, verify):
    (cifar / "data_batch_4").unlink()
    assert read_error(cifar, verify) == f"{cifar / 'data_batch_4'} is missing"


def test_md5_mismatch_when_verifying(cifar):
    message = read_error(cifar, verify=True)  # generated data is not the official files
    assert message.startswith(f"{cifar / 'data_batch_1'} has md5 {md5(cifar / 'data_batch_1')}")
    assert "not the official" in message and "data.verify: false" in message


def test_a_pickle_that_would_run_code_is_refused(cifar, tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    (cifar / "data_batch_1").write_bytes(pickle.dumps({"data": Exploit()}, protocol=2))
    message = read_error(cifar)
    assert str(cifar / "data_batch_1") in message and "is not allowed" in message
    assert not marker.exists()


# --- the archive ------------------------------------------------------------------------------

def test_corrupt_archive_is_named_with_what_to_do(tmp_path):
    (tmp_path / CIFAR_ARCHIVE).write_bytes(b"half a download")
    with pytest.raises(DatasetError) as caught:
        fetch_cifar10(tmp_path, None, verify=True)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / CIFAR_ARCHIVE} has md5 ")
    assert "not the official c58f30108f718f92721af3b95e74349a" in message
    assert "Delete it and rerun" in message
    assert not (tmp_path / "cifar10" / CIFAR_DIR).exists()


def test_archive_is_extracted_by_file_name_only(cifar, tmp_path, monkeypatch):
    """A good archive is extracted and verified; a member with a path outside the raw folder
    lands inside it (or not at all), never outside."""
    raw = tmp_path / "raw"
    raw.mkdir()
    archive = raw / CIFAR_ARCHIVE
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(cifar.iterdir()):
            tar.add(path, arcname=f"{CIFAR_DIR}/{path.name}")
        evil = b"outside"
        info = tarfile.TarInfo("../../escaped")
        info.size = len(evil)
        tar.addfile(info, io.BytesIO(evil))
    monkeypatch.setattr(fetching, "CIFAR_ARCHIVE_MD5", md5(archive))
    patch_official_md5s(monkeypatch, cifar)

    fetch_cifar10(raw, None, verify=True)
    assert sorted(p.name for p in (raw / "cifar10" / CIFAR_DIR).iterdir()) == sorted(
        p.name for p in cifar.iterdir())
    assert not list(tmp_path.rglob("escaped"))
    train, _ = read_cifar(raw / "cifar10" / CIFAR_DIR, verify=True)
    assert len(train) == 50


# --- Fashion-MNIST idx files ------------------------------------------------------------------

def write_idx(path: Path, array: np.ndarray, code: int = 8) -> None:
    path.write_bytes(idx_bytes(array, code))


@pytest.fixture
def fashion(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 10)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n))
    return tmp_path


def fashion_error(folder: Path) -> str:
    with pytest.raises(DatasetError) as caught:
        read_fashion_mnist(folder, verify=False)
    return str(caught.value)


def test_fashion_truncated_images(fashion):
    path = fashion / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    assert fashion_error(fashion).startswith(f"{path}: not a readable idx file of uint8 images")


def test_fashion_labels_out_of_range_or_miscounted(fashion):
    labels = fashion / "t10k-labels-idx1-ubyte"
    write_idx(labels, np.full(10, 12))
    assert fashion_error(fashion).startswith(f"{labels}: labels must lie in 0..9")
    write_idx(labels, np.zeros(9))
    assert fashion_error(fashion) == (f"{labels}: 9 labels for the 10 images of "
                                      "t10k-images-idx3-ubyte")


@pytest.mark.parametrize("code", [0x0C, 0x0A])
def test_fashion_idx_of_another_element_type(fashion, code):
    """int32 labels (torchvision's TypeError) or an undefined type code (its KeyError)."""
    labels = fashion / "t10k-labels-idx1-ubyte"
    write_idx(labels, np.zeros(10), code)
    assert fashion_error(fashion).startswith(f"{labels}: not a readable idx file of uint8 labels")


def test_fashion_missing_file(fashion):
    (fashion / "train-labels-idx1-ubyte").unlink()
    assert fashion_error(fashion) == f"{fashion / 'train-labels-idx1-ubyte'} is missing"


def test_fashion_damaged_gz_in_source(fashion, tmp_path):
    """A .gz whose deflate stream is damaged (zlib.error, which is not an OSError) is named."""
    plain, packed = fashion / "t10k-images-idx3-ubyte", fashion / "t10k-images-idx3-ubyte.gz"
    write_idx(plain, np.zeros((10, 28, 28)))
    blob = bytearray(gzip.compress(plain.read_bytes(), mtime=0))
    blob[20:50] = b"\xff" * 30  # inside the compressed stream, not the CRC at the end
    packed.write_bytes(bytes(blob))
    plain.unlink()
    with pytest.raises(DatasetError, match=f"^{packed}: not a readable .gz file"):
        fetch(tmp_path / "raw", Data(dataset="fashion_mnist", source=str(fashion), verify=False))


# --- split files ------------------------------------------------------------------------------

def test_missing_split_file(tmp_path):
    synthetic_images(20, seed=0).save(tmp_path / "train.pt")
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'val.pt'} does not exist"):
        load_splits(tmp_path, ("train", "val"))


def test_truncated_or_foreign_split_file(tmp_path):
    path = tmp_path / "train.pt"
    synthetic_images(20, seed=0).save(path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match=f"{path} is not a readable torch file"):
        load_splits(tmp_path, ("train",))
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match=f"{path} is not a split file"):
        load_splits(tmp_path, ("train",))
    images, labels = torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 1])
    for foreign in ({"images": images.tolist(), "labels": labels, "classes": ["a", "b"]},
                    {"images": images, "labels": labels.tolist(), "classes": ["a", "b"]},
                    {"images": images, "labels": labels, "classes": 2}):
        torch.save(foreign, path)
        with pytest.raises(ValueError, match=f"{path} is not a split file"):
            load_splits(tmp_path, ("train",))
    torch.save({"images": images, "labels": torch.tensor([0, 5]), "classes": ["a", "b"]}, path)
    with pytest.raises(ValueError, match=f"{path}: labels must lie in 0..1"):
        load_splits(tmp_path, ("train",))
