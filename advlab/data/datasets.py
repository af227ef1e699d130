"""The datasets' files on disk: fetched (download, local copy or generated), verified and read.

Layout under the raw folder (a DVC output), one folder per dataset:
  cifar10/cifar-10-batches-py/    data_batch_1..5, test_batch, batches.meta
  cifar10/cifar-10-python.tar.gz  the official archive (one placed by hand in the raw folder
                                  itself is used too, and left there)
  fashion_mnist/                  {train,t10k}-{images-idx3,labels-idx1}-ubyte (and .gz)
  synthetic/cifar-10-batches-py/  the generated set, in the CIFAR format; generated.json
"""

from __future__ import annotations

import gzip
import hashlib
import json
import pickle
import shutil
import socket
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from advlab.core.errors import InputError
from advlab.core.io import atomic_path, write_json
from advlab.data.images import ImageSet
from advlab.params.data import Data

CIFAR_DIR = "cifar-10-batches-py"
CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR_URL = f"https://www.cs.toronto.edu/~kriz/{CIFAR_ARCHIVE}"
CIFAR_ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
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
FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_GZ_MD5 = {  # the official archives (torchvision.datasets.FashionMNIST's list)
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
FASHION_CLASSES = ("t-shirt/top", "trouser", "pullover", "dress", "coat",
                   "sandal", "shirt", "sneaker", "bag", "ankle boot")
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                 "dog", "frog", "horse", "ship", "truck")
SYNTHETIC_CLASSES = ("square", "disc", "ring", "cross", "h-bar",
                     "v-bar", "diagonal", "frame", "dots", "triangle")


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
        blob = {"batch_label": name, "data": part.images.reshape(len(part), -1).numpy(),
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
        except (AssertionError, RuntimeError, ValueError, IndexError) as err:
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


# --- Synthetic, learnable images -------------------------------------------------------------

def synthetic_images(n: int, seed: int) -> ImageSet:
    """n 3x32x32 images of 10 classes: a class-specific shape in a class-specific colour, at a
    random position and size, on a random dark background, plus pixel noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    labels = labels[torch.randperm(n, generator=g)]
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    cy, cx = (torch.rand(2, n, 1, 1, generator=g) * 12 + 10).unbind(0)
    r = torch.rand(n, 1, 1, generator=g) * 4 + 5
    dy, dx = (yy - cy) / r, (xx - cx) / r
    masks = torch.stack([
        (dy.abs() < 1) & (dx.abs() < 1),                              # square
        dy**2 + dx**2 < 1,                                            # disc
        ((dy**2 + dx**2) < 1) & ((dy**2 + dx**2) > 0.4),              # ring
        ((dy.abs() < 0.3) | (dx.abs() < 0.3)) & (dy.abs() < 1) & (dx.abs() < 1),  # cross
        (dy.abs() < 0.3) & (dx.abs() < 1.3),                          # h-bar
        (dx.abs() < 0.3) & (dy.abs() < 1.3),                          # v-bar
        ((dy - dx).abs() < 0.35) & (dy.abs() < 1),                    # diagonal
        (dy.abs() < 1) & (dx.abs() < 1) & ((dy.abs() > 0.6) | (dx.abs() > 0.6)),  # frame
        ((dy - 0.5)**2 + (dx - 0.5)**2 < 0.15) | ((dy + 0.5)**2 + (dx + 0.5)**2 < 0.15),  # dots
        (dy < 1) & (dy > -1) & (dx.abs() < (dy + 1) / 2),             # triangle
    ], 1)[torch.arange(n), labels]
    palette = torch.tensor([[1, .2, .2], [.2, 1, .2], [.3, .3, 1], [1, 1, .2], [1, .2, 1],
                            [.2, 1, 1], [1, .6, .2], [.6, .2, 1], [.9, .9, .9], [.5, 1, .5]])
    mix = torch.rand(n, 1, generator=g) * 0.6  # share of a random colour: colour alone is a hint
    colour = (1 - mix) * palette[labels] + mix * torch.rand(n, 3, generator=g)
    background = torch.rand(n, 3, 1, 1, generator=g) * 0.5
    img = torch.where(masks.unsqueeze(1), colour[:, :, None, None], background)
    img = img + 0.15 * torch.randn(img.shape, generator=g)
    images = (img.clamp(0, 1) * 255).round().to(torch.uint8)
    return ImageSet(images, labels, SYNTHETIC_CLASSES)


# --- Fetching into the raw folder ------------------------------------------------------------

OFFLINE_HINT = (
    "No network and no {what} in {where}. Either place the official files there (an "
    "air-gapped copy), point data.source at a local copy, or run an offline profile: "
    "`./run python -m advlab.experiments.profile synthetic` (generated data) or "
    "`./run python -m advlab.experiments.profile fashion_mnist` "
    "(after `apt-get install dataset-fashion-mnist`)."
)


def dataset_folder(raw: Path, dataset: str) -> Path:
    """Each dataset's own folder under the raw folder: fetching one never touches another's."""
    return raw / dataset


def _network_reachable(host: str, timeout: float = 5.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _install(dest: Path, fill: Callable[[Path], None], expected_md5: str | None,
             origin: Path) -> None:
    """fill(tmp) writes dest's new content; it replaces dest only once its md5 is checked (a
    bad copy leaves dest as it was), and an unchanged file keeps its mtime."""
    with atomic_path(dest, keep_identical=True) as tmp:
        fill(tmp)
        if expected_md5 is not None and (got := md5(tmp)) != expected_md5:
            raise DatasetError(
                f"{origin} has md5 {got}, not the official {expected_md5}: the file is corrupt "
                "or not the official dataset (set data.verify: false to accept other data in "
                "this format)")


def _copy_verified(source: Path, dest: Path, names: list[str], expected: dict[str, str] | None,
                   gz_ok: bool = False) -> None:
    """Copies names from source to dest (decompressing NAME.gz where gz_ok), each md5-checked
    before it replaces the old copy; every file is found before any is written."""
    found: dict[str, tuple[Path, Callable[[Path, Path], object]]] = {}
    for name in names:
        plain, packed = source / name, source / f"{name}.gz"
        if plain.is_file():
            found[name] = plain, shutil.copyfile
        elif gz_ok and packed.is_file():
            found[name] = packed, _gunzip
        else:
            raise DatasetError(f"data.source: {plain} is missing")
    for name, (origin, copy) in found.items():
        _install(dest / name, lambda tmp, src=origin, copy=copy: copy(src, tmp),
                 expected[name] if expected else None, origin)


def _gunzip(packed: Path, dest: Path) -> None:
    try:
        with gzip.open(packed, "rb") as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out)
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
        raise DatasetError(f"{packed}: not a readable .gz file ({err})") from None


def _download(url: str, dest: Path, expected_md5: str) -> None:
    """url -> dest through a temporary name, md5-checked: a killed download leaves no dest."""
    from torchvision.datasets.utils import download_url

    print(f"download: {url} -> {dest}", flush=True)
    try:
        with atomic_path(dest) as tmp:
            download_url(url, str(tmp.parent), tmp.name, md5=expected_md5)
    except (OSError, RuntimeError) as err:  # URLError is an OSError
        raise DatasetError(f"downloading {url} to {dest} failed: {err}") from None


def _check_archive(path: Path, expected_md5: str) -> None:
    if (got := md5(path)) != expected_md5:
        raise DatasetError(
            f"{path} has md5 {got}, not the official {expected_md5}: a partial download or a "
            "corrupt copy. Delete it and rerun (it is downloaded again), or replace it with a "
            "good copy.")


def _extract_cifar(archive: Path, folder: Path) -> None:
    """The batches of the official archive, each written through a temporary name. Members are
    matched by file name only, so no path in the archive can write outside `folder`."""
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            name = Path(member.name).name
            if member.isfile() and name in CIFAR_MD5:
                with (atomic_path(folder / name, keep_identical=True) as tmp,
                      tar.extractfile(member) as src, open(tmp, "wb") as out):
                    shutil.copyfileobj(src, out)


def _holds_official(folder: Path, expected: dict[str, str]) -> bool:
    return all((folder / n).is_file() for n in expected) and all(
        md5(folder / n) == want for n, want in expected.items())


def fetch_cifar10(raw: Path, source: Path | None, verify: bool) -> None:
    """Into raw/cifar10/: from data.source, or the official archive found in raw/cifar10/ or
    (placed by hand) in raw/ itself, or downloaded into raw/cifar10/."""
    folder = dataset_folder(raw, "cifar10") / CIFAR_DIR
    names = [*CIFAR_TRAIN, *CIFAR_TEST, "batches.meta"]
    if source is not None:
        src = source / CIFAR_DIR if (source / CIFAR_DIR).is_dir() else source
        _copy_verified(src, folder, names, CIFAR_MD5 if verify else None)
        return
    if _holds_official(folder, CIFAR_MD5):
        return
    places = [dataset_folder(raw, "cifar10") / CIFAR_ARCHIVE, raw / CIFAR_ARCHIVE]
    archive = next((p for p in places if p.is_file()), places[0])
    if not archive.is_file():
        if not _network_reachable("www.cs.toronto.edu"):
            raise DatasetError(OFFLINE_HINT.format(what=CIFAR_ARCHIVE,
                                                   where=f"{archive.parent} (or {raw})"))
        _download(CIFAR_URL, archive, CIFAR_ARCHIVE_MD5)
    _check_archive(archive, CIFAR_ARCHIVE_MD5)
    _extract_cifar(archive, folder)
    verify_md5(folder, CIFAR_MD5)


def fetch_fashion_mnist(raw: Path, source: Path | None, verify: bool) -> None:
    folder = dataset_folder(raw, "fashion_mnist")
    if source is not None:
        _copy_verified(source, folder, list(FASHION_MD5), FASHION_MD5 if verify else None,
                       gz_ok=True)
        return
    if _holds_official(folder, FASHION_MD5):
        return
    archives = [folder / name for name in FASHION_GZ_MD5]
    if not all(p.is_file() for p in archives) and not _network_reachable(
        "fashion-mnist.s3-website.eu-central-1.amazonaws.com"
    ):
        raise DatasetError(OFFLINE_HINT.format(what="Fashion-MNIST .gz files", where=folder))
    for archive, expected in zip(archives, FASHION_GZ_MD5.values(), strict=True):
        if not archive.is_file():
            _download(FASHION_URL + archive.name, archive, expected)
        _check_archive(archive, expected)
    for archive in archives:
        _install(folder / archive.stem, lambda tmp, src=archive: _gunzip(src, tmp),
                 FASHION_MD5[archive.stem], archive)


SYNTHETIC_SEED = 12345  # the generated dataset is fixed data, independent of base.seed
SYNTHETIC_RECORD = "generated.json"  # what was generated, and the md5 of each file written


def fetch_synthetic(raw: Path, n_train: int, n_test: int, seed: int = SYNTHETIC_SEED) -> None:
    """Generates the set into raw/synthetic/, unless the files there are this very set."""
    root = dataset_folder(raw, "synthetic")
    folder, record = root / CIFAR_DIR, root / SYNTHETIC_RECORD
    wanted = {"train": n_train, "test": n_test, "seed": seed}
    if record.is_file():
        done = json.loads(record.read_text())
        if done.get("params") == wanted and done.get("md5") and _holds_official(folder,
                                                                             done["md5"]):
            return
    write_cifar_batches(folder, synthetic_images(n_train, seed), synthetic_images(n_test, seed + 1))
    files = {p.name: md5(p) for p in sorted(folder.iterdir()) if not p.name.startswith(".")}
    write_json(record, {"params": wanted, "md5": files})


def read_raw(raw: Path, dataset: str, verify: bool) -> tuple[ImageSet, ImageSet]:
    """(official train, official test) of a dataset fetched into `raw`."""
    folder = dataset_folder(raw, dataset)
    if dataset == "fashion_mnist":
        return read_fashion_mnist(folder, verify)
    return read_cifar(folder / CIFAR_DIR, verify and dataset == "cifar10")


def fetch(raw: Path, data: Data) -> None:
    """Puts the dataset's files, verified, in its own folder under `raw`; nothing else there is
    touched (another dataset's files, an archive placed by hand)."""
    source = Path(data.source) if data.source is not None else None
    if source is not None and not source.is_dir():
        raise DatasetError(f"data.source = {data.source!r} is not a folder")
    if data.dataset == "cifar10":
        fetch_cifar10(raw, source, data.verify)
    elif data.dataset == "fashion_mnist":
        fetch_fashion_mnist(raw, source, data.verify)
    else:
        fetch_synthetic(raw, data.synthetic_train, data.synthetic_test)
