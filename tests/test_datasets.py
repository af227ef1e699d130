import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import idx_bytes, patch_official_md5s

from advlab.data import fetch as fetching
from advlab.data import synthetic
from advlab.data.fetch import CIFAR_ARCHIVE, fetch
from advlab.data.formats import (
    CIFAR_CLASSES,
    CIFAR_DIR,
    CIFAR_TRAIN,
    DatasetError,
    md5,
    read_raw,
    write_cifar_batches,
)
from advlab.data.synthetic import SYNTHETIC_SEED, synthetic_images
from advlab.params.data import Data


def test_synthetic_data_round_trips_through_the_cifar_loader(tmp_path):
    fetch(tmp_path, Data(dataset="synthetic", synthetic_train=500, synthetic_test=100,
                         train_size=400, val_size=100))
    assert sorted(p.name for p in (tmp_path / "synthetic" / CIFAR_DIR).iterdir()) == [
        "batches.meta", *[f"data_batch_{i}" for i in range(1, 6)], "test_batch"]
    train, test = read_raw(tmp_path, "synthetic", verify=True)
    assert (len(train), len(test)) == (500, 100)
    assert train.shape == (3, 32, 32) and train.images.dtype == torch.uint8
    expected = synthetic_images(500, SYNTHETIC_SEED)
    assert torch.equal(train.images, expected.images) and torch.equal(train.labels, expected.labels)
    assert torch.bincount(train.labels).tolist() == [50] * 10


def test_a_synthetic_set_smaller_than_the_five_batches_round_trips(tmp_path):
    """3 training images in 5 batches: two batches are empty, and are written and read."""
    fetch(tmp_path, Data(dataset="synthetic", synthetic_train=3, synthetic_test=2,
                         train_size=3, val_size=0))
    train, test = read_raw(tmp_path, "synthetic", verify=True)
    assert torch.equal(train.images, synthetic_images(3, SYNTHETIC_SEED).images)
    assert (len(train), len(test)) == (3, 2)


def test_the_readers_keep_the_official_layouts(tmp_path):
    """Files built by hand, not by write_cifar_batches (a writer and a reader wrong the same way
    would round-trip): a CIFAR row is the red plane, then green, then blue, each row-major; an idx
    file is (N, H, W), row-major. Labels index the classes as the files name them."""
    plane = np.arange(32 * 32).reshape(32, 32) % 251  # not symmetric: a transposition shows
    row = np.concatenate([plane.ravel(), np.full(1024, 252), np.full(1024, 253)]).astype(np.uint8)
    folder = tmp_path / "cifar10" / CIFAR_DIR
    folder.mkdir(parents=True)
    for name in [*CIFAR_TRAIN, "test_batch"]:
        blob = {"data": np.stack([row, row[::-1]]), "labels": [3, 9]}
        (folder / name).write_bytes(pickle.dumps(blob, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": list(CIFAR_CLASSES)},
                                                              protocol=2))
    train, test = read_raw(tmp_path, "cifar10", verify=False)
    assert train.images.shape == (10, 3, 32, 32) and len(test) == 2
    assert torch.equal(train.images[0, 0], torch.from_numpy(plane).to(torch.uint8))
    assert train.images[0, 1].eq(252).all() and train.images[0, 2].eq(253).all()
    assert train.images[1, 0].eq(253).all() and train.images[1, 2, 0, 0] == plane[-1, -1]
    assert [train.classes[i] for i in train.labels[:2]] == ["cat", "truck"]

    pixels = np.arange(28 * 28).reshape(28, 28) % 251
    images = np.stack([pixels, 255 - pixels])
    source = tmp_path / "fashion"
    source.mkdir()
    for prefix in ("train", "t10k"):
        _write_idx(source / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(source / f"{prefix}-labels-idx1-ubyte.gz", np.array([0, 9]))
    fetch(tmp_path, Data(dataset="fashion_mnist", source=str(source), verify=False))
    train, _ = read_raw(tmp_path, "fashion_mnist", verify=False)
    assert torch.equal(train.images[:, 0], torch.from_numpy(images).to(torch.uint8))
    assert [train.classes[i] for i in train.labels] == ["t-shirt/top", "ankle boot"]


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
    with gzip.open(path, "wb") as f:
        f.write(idx_bytes(array))


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
    monkeypatch.chdir(tmp_path)  # no source/ here: files in the checkout's cannot matter
    monkeypatch.setattr(fetching, "_network_reachable", lambda url, timeout=5.0: False)
    with pytest.raises(DatasetError) as err:
        fetch(tmp_path, Data(dataset="cifar10"))
    message = str(err.value)
    assert "cifar-10-python.tar.gz" in message and "advlab.experiments.profile" in message


def test_the_network_probe_uses_the_port_of_the_download(tmp_path, monkeypatch):
    """Fashion-MNIST's S3 website endpoint serves http only: a probe of port 443 would call a
    working network offline."""
    monkeypatch.chdir(tmp_path)  # no source/ here: files in the checkout's cannot matter
    probes = []

    def create_connection(address, timeout):
        probes.append(address)
        raise OSError("offline")

    monkeypatch.setattr(fetching.socket, "create_connection", create_connection)
    for dataset in ("cifar10", "fashion_mnist"):
        with pytest.raises(DatasetError, match="No network"):
            fetch(tmp_path / "raw", Data(dataset=dataset, train_size=10, val_size=0))
    assert probes == [("www.cs.toronto.edu", 443),
                      ("fashion-mnist.s3-website.eu-central-1.amazonaws.com", 80)]


def test_synthetic_set_already_there_is_not_generated_again(tmp_path, monkeypatch):
    data = Data(dataset="synthetic", synthetic_train=50, synthetic_test=10, train_size=40,
                val_size=10)
    fetch(tmp_path, data)
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    monkeypatch.setattr(synthetic, "synthetic_images", None)  # a call would fail
    fetch(tmp_path, data)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == mtimes
    batch = tmp_path / "synthetic" / CIFAR_DIR / "test_batch"
    batch.write_bytes(b"edited")
    monkeypatch.undo()
    fetch(tmp_path, data)  # an edited file is regenerated
    assert read_raw(tmp_path, "synthetic", verify=True)[1].images.shape == (10, 3, 32, 32)


def small_official_archive(raw, monkeypatch, name=CIFAR_ARCHIVE):
    """A small archive in the real format at raw/NAME, made "official" by patching the md5s."""
    import tarfile

    batches = raw.parent / "batches"
    write_cifar_batches(batches, synthetic_images(50, seed=1), synthetic_images(10, seed=2))
    archive = raw / name
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(batches.iterdir()):
            tar.add(path, arcname=f"{CIFAR_DIR}/{path.name}")
    monkeypatch.setattr(fetching, "CIFAR_ARCHIVE_MD5", md5(archive))
    patch_official_md5s(monkeypatch, batches)
    return archive


def test_hand_placed_archive_survives_another_dataset_and_is_used_offline(tmp_path,
                                                                          monkeypatch):
    raw = tmp_path / "raw"
    archive = small_official_archive(raw, monkeypatch)  # data/raw/cifar-10-python.tar.gz
    content = archive.read_bytes()
    (raw / "notes.txt").write_text("mine")
    fetch(raw, Data(dataset="synthetic", synthetic_train=50, synthetic_test=10,
                    train_size=40, val_size=10))
    source = tmp_path / "fashion"
    source.mkdir()
    for prefix, n in (("train", 30), ("t10k", 10)):
        _write_idx(source / f"{prefix}-images-idx3-ubyte.gz", np.zeros((n, 28, 28)))
        _write_idx(source / f"{prefix}-labels-idx1-ubyte.gz", np.zeros(n))
    fetch(raw, Data(dataset="fashion_mnist", source=str(source), verify=False))
    assert archive.read_bytes() == content and (raw / "notes.txt").read_text() == "mine"

    monkeypatch.setattr(fetching, "_network_reachable", lambda url, timeout=5.0: False)
    monkeypatch.chdir(tmp_path)  # no source/ here: files in the checkout's cannot matter
    fetch(raw, Data(dataset="cifar10"))  # offline: the hand-placed archive is what it reads
    train, test = read_raw(raw, "cifar10", verify=True)
    assert (len(train), len(test)) == (50, 10)
    assert archive.read_bytes() == content
    for dataset in ("synthetic", "fashion_mnist"):  # the other datasets are still there
        assert len(read_raw(raw, dataset, verify=False)[1]) == 10


def test_bad_source_writes_nothing_and_a_bad_file_replaces_nothing(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    with pytest.raises(DatasetError, match="data.source = .* is not a folder"):
        fetch(raw, Data(dataset="cifar10", source=str(tmp_path / "absent")))
    assert not raw.exists()
    source = tmp_path / "src"
    write_cifar_batches(source, synthetic_images(50, seed=1), synthetic_images(10, seed=2))
    patch_official_md5s(monkeypatch, source)
    fetch(raw, Data(dataset="cifar10", source=str(source)))
    good = {p.name: p.read_bytes() for p in (raw / "cifar10" / CIFAR_DIR).iterdir()}
    (source / "test_batch").write_bytes(b"damaged")
    with pytest.raises(DatasetError, match=f"{source / 'test_batch'} has md5"):
        fetch(raw, Data(dataset="cifar10", source=str(source)))
    (source / "data_batch_2").unlink()
    with pytest.raises(DatasetError, match="data_batch_2 is missing"):
        fetch(raw, Data(dataset="cifar10", source=str(source)))
    assert {p.name: p.read_bytes() for p in (raw / "cifar10" / CIFAR_DIR).iterdir()} == good


@pytest.mark.skipif(not (Path("/usr/share/datasets/fashion-mnist").is_dir()),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_debian_fashion_mnist_matches_the_official_md5s(tmp_path):
    fetch(tmp_path, Data(dataset="fashion_mnist", source="/usr/share/datasets/fashion-mnist"))
    train, test = read_raw(tmp_path, "fashion_mnist", verify=True)
    assert (len(train), len(test)) == (60_000, 10_000)
