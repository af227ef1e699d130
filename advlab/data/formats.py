"""The datasets' on-disk formats read into ImageSets (CIFAR python batches, Fashion-MNIST idx
files), written (CIFAR batches) and md5-checked against the official files.

Layout under the raw folder (a DVC output), one folder per dataset:
  cifar10/cifar-10-batches-py/    data_batch_1..5, test_batch, batches.meta
  cifar10/cifar-10-python.tar.gz  the official archive (one placed by hand in the raw folder
                                  itself is used too, and left there)
  fashion_mnist/                  {train,t10k}-{images-idx3,labels-idx1}-ubyte (and .gz)
  synthetic/cifar-10-batches-py/  the generated set, in the CIFAR format; generated.json
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from advlab.core.errors import InputError
from advlab.core.io import atomic_path
from advlab.data.images import ImageSet

CIFAR_DIR = "cifar-10-batches-py"
CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR_TEST = ["test_batch"]
CIFAR_MD5 = {  # torchvision.datasets.CIFAR10's list, i.e. the official files
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
FASHION_MD5 = {  # the decompressed official files (Debian recompresses the .gz archives)
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
FASHION_CLASSES = ("t-shirt/top", "trouser", "pullover", "dress", "coat",
                   "sandal", "shirt", "sneaker", "bag", "ankle boot")
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                 "dog", "frog", "horse", "ship", "truck")


class DatasetError(InputError, RuntimeError):
    """A dataset file is missing, corrupt or malformed; the message names it."""


def md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_md5(folder: Path, expected: dict[str, str]) -> None:
    for name in expected:  # a missing file first: it is the likelier cause of the rest
        if not (folder / name).is_file():
            raise DatasetError(f"{folder / name} is missing")
    for name, want in expected.items():
        path = folder / name
        if (got := md5(path)) != want:
            raise DatasetError(
                f"{path} has md5 {got}, not the official {want}: the file is corrupt or not the "
                "official dataset (set data.verify: false to accept other data in this format)"
            )


def holds_files(folder: Path, expected: dict[str, str]) -> bool:
    """Whether folder holds every named file, each with its expected md5."""
    return all((folder / n).is_file() for n in expected) and all(
        md5(folder / n) == want for n, want in expected.items())


# --- CIFAR python batches -------------------------------------------------------------------

class _BatchUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR batch format only: containers, bytes and numpy arrays, no code."""

    ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"), ("__builtin__", "bytes"),  # how protocol 2 stores bytes (b"")
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise DatasetError(f"{path} is missing")
    try:
        with open(path, "rb") as f:
            blob = _BatchUnpickler(f, encoding="latin1").load()
    except Exception as err:
        raise DatasetError(f"{path} is not a readable CIFAR batch ({err})") from None
    if not isinstance(blob, dict):
        raise DatasetError(f"{path} is not a CIFAR batch (a dict), got {type(blob).__name__}")
    return blob


def _read_cifar_batch(path: Path, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    blob = _unpickle(path)
    if "data" not in blob or "labels" not in blob:
        raise DatasetError(f"{path} lacks the 'data' or 'labels' entry of a CIFAR batch")
    data, labels = np.asarray(blob["data"]), np.asarray(blob["labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(f"{path}: 'data' must be uint8 rows of 3072 pixels (3x32x32), got "
                           f"{data.dtype} {data.shape}")
    if labels.shape != (len(data),) or labels.size and not np.issubdtype(labels.dtype,
                                                                         np.integer):
        raise DatasetError(f"{path}: expected {len(data)} integer labels, one per image, got "
                           f"{labels.dtype} {labels.shape}")
    _check_labels(path, labels, num_classes)
    images = torch.from_numpy(data.copy()).view(-1, 3, 32, 32)
    return images, torch.from_numpy(labels.astype(np.int64))


def _check_labels(path: Path, labels: np.ndarray, num_classes: int) -> None:
    if len(labels) and not 0 <= labels.min() <= labels.max() < num_classes:
        raise DatasetError(f"{path}: labels must lie in 0..{num_classes - 1} (one per class), "
                           f"got {labels.min()}..{labels.max()}")


def read_cifar(folder: Path, verify: bool) -> tuple[ImageSet, ImageSet]:
    """(official train, official test) from CIFAR python batches; sizes come from the files."""
    if verify:
        verify_md5(folder, CIFAR_MD5)
    meta = _unpickle(folder / "batches.meta")
    classes = tuple(meta.get("label_names", ()))
    if not classes:
        raise DatasetError(f"{folder / 'batches.meta'} lacks 'label_names'")

    def read(names: list[str]) -> ImageSet:
        parts = [_read_cifar_batch(folder / name, len(classes)) for name in names]
        images, labels = (torch.cat(t) for t in zip(*parts, strict=True))
        if not len(images):
            raise DatasetError(f"{folder / names[-1]}: no images in {', '.join(names)}")
        return ImageSet(images, labels, classes)

    return read(CIFAR_TRAIN), read(CIFAR_TEST)


def write_cifar_batches(folder: Path, train: ImageSet, test: ImageSet) -> None:
    """Writes images in the CIFAR-10 python format (5 training batches, 1 test batch, meta)."""
    folder.mkdir(parents=True, exist_ok=True)
    chunks = torch.arange(len(train)).tensor_split(len(CIFAR_TRAIN))
    named = [(n, train.subset(i)) for n, i in zip(CIFAR_TRAIN, chunks, strict=True)]
    for name, part in [*named, (CIFAR_TEST[0], test)]:
        blob = {"batch_label": name, "data": part.images.flatten(1).numpy(),
                "labels": part.labels.tolist()}
        _pickle_atomic(folder / name, blob)
    _pickle_atomic(folder / "batches.meta", {"label_names": list(train.classes),
                                             "num_vis": 3072})


def _pickle_atomic(path: Path, blob: dict) -> None:
    with atomic_path(path, keep_identical=True) as tmp, open(tmp, "wb") as f:
        pickle.dump(blob, f, protocol=2)


# --- Fashion-MNIST idx files -----------------------------------------------------------------

def read_fashion_mnist(folder: Path, verify: bool) -> tuple[ImageSet, ImageSet]:
    from torchvision.datasets.mnist import read_image_file, read_label_file

    if verify:
        verify_md5(folder, FASHION_MD5)

    def read_idx(path: Path, reader: Callable[[str], torch.Tensor], what: str) -> torch.Tensor:
        if not path.is_file():
            raise DatasetError(f"{path} is missing")
        try:
            return reader(str(path))
        except (AssertionError, RuntimeError, ValueError, IndexError, TypeError, KeyError) as err:
            raise DatasetError(f"{path}: not a readable idx file of {what} "
                               f"({type(err).__name__}: {err})") from None

    def read(prefix: str) -> ImageSet:
        images_path = folder / f"{prefix}-images-idx3-ubyte"
        labels_path = folder / f"{prefix}-labels-idx1-ubyte"
        images = read_idx(images_path, read_image_file, "uint8 images (N, H, W)")
        labels = read_idx(labels_path, read_label_file, "uint8 labels (N,)")
        if labels.shape != images.shape[:1]:
            raise DatasetError(f"{labels_path}: {len(labels)} labels for the {len(images)} "
                               f"images of {images_path.name}")
        _check_labels(labels_path, labels.numpy(), len(FASHION_CLASSES))
        if not len(images):
            raise DatasetError(f"{images_path}: no images")
        if images.shape[1] != images.shape[2]:
            raise DatasetError(f"{images_path}: images of {images.shape[1]}x{images.shape[2]} "
                               "pixels; the model takes square images only")
        return ImageSet(images.unsqueeze(1).contiguous(), labels.long(), FASHION_CLASSES)

    return read("train"), read("t10k")


def dataset_folder(raw: Path, dataset: str) -> Path:
    """Each dataset's own folder under the raw folder: fetching one never touches another's."""
    return raw / dataset


def read_raw(raw: Path, dataset: str, verify: bool) -> tuple[ImageSet, ImageSet]:
    """(official train, official test) of a dataset fetched into `raw`."""
    folder = dataset_folder(raw, dataset)
    if dataset == "fashion_mnist":
        return read_fashion_mnist(folder, verify)
    return read_cifar(folder / CIFAR_DIR, verify and dataset == "cifar10")
