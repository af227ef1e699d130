"""Fetching the dataset's files, verified, into the raw folder: downloaded (torchvision's
downloader), copied from data.source, or generated (advlab/data/formats.py: the layout)."""

from __future__ import annotations

import gzip
import shutil
import socket
import tarfile
import urllib.parse
import zlib
from collections.abc import Callable
from pathlib import Path

from advlab.core.io import atomic_path
from advlab.data.formats import (
    CIFAR_DIR,
    CIFAR_MD5,
    CIFAR_TEST,
    CIFAR_TRAIN,
    FASHION_MD5,
    DatasetError,
    dataset_folder,
    holds_files,
    md5,
    verify_md5,
)
from advlab.data.synthetic import fetch_synthetic
from advlab.params.data import DEFAULT_SOURCE, Data

CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR_URL = f"https://www.cs.toronto.edu/~kriz/{CIFAR_ARCHIVE}"
CIFAR_ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_GZ_MD5 = {  # the official archives (torchvision.datasets.FashionMNIST's list)
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}

OFFLINE_HINT = (
    "No network and no {what} in {where}. Either place the official files there (an "
    "air-gapped copy), point data.source at a local copy, or run an offline profile: "
    "`./run python -m advlab.experiments.profile synthetic` (generated data) or "
    "`./run python -m advlab.experiments.profile fashion_mnist` "
    "(after `apt-get install dataset-fashion-mnist`)."
)


def _network_reachable(url: str, timeout: float = 5.0) -> bool:
    """Whether url's host accepts a connection on the port its download uses (Fashion-MNIST's
    S3 website endpoint serves http only, so port 443 says nothing about it)."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
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
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
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


def fetch_cifar10(raw: Path, source: Path | None, verify: bool) -> None:
    """Into raw/cifar10/: from data.source, or the official archive found in raw/cifar10/ or
    (placed by hand) in raw/ itself, or downloaded into raw/cifar10/."""
    folder = dataset_folder(raw, "cifar10") / CIFAR_DIR
    names = [*CIFAR_TRAIN, *CIFAR_TEST, "batches.meta"]
    if source is not None:
        src = source / CIFAR_DIR if (source / CIFAR_DIR).is_dir() else source
        _copy_verified(src, folder, names, CIFAR_MD5 if verify else None)
        return
    if holds_files(folder, CIFAR_MD5):
        return
    places = [dataset_folder(raw, "cifar10") / CIFAR_ARCHIVE, raw / CIFAR_ARCHIVE]
    archive = next((p for p in places if p.is_file()), places[0])
    if not archive.is_file():
        if not _network_reachable(CIFAR_URL):
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
    if holds_files(folder, FASHION_MD5):
        return
    archives = [folder / name for name in FASHION_GZ_MD5]
    if not all(p.is_file() for p in archives) and not _network_reachable(FASHION_URL):
        raise DatasetError(OFFLINE_HINT.format(what="Fashion-MNIST .gz files", where=folder))
    for archive, expected in zip(archives, FASHION_GZ_MD5.values(), strict=True):
        if not archive.is_file():
            _download(FASHION_URL + archive.name, archive, expected)
        _check_archive(archive, expected)
    for archive in archives:
        _install(folder / archive.stem, lambda tmp, src=archive: _gunzip(src, tmp),
                 FASHION_MD5[archive.stem], archive)


SOURCE_FILES = {  # the files of each dataset that a data.source folder may hold
    "cifar10": [*CIFAR_MD5, *(f"{CIFAR_DIR}/{name}" for name in CIFAR_MD5)],
    "fashion_mnist": [*FASHION_MD5, *(f"{name}.gz" for name in FASHION_MD5)],
    "synthetic": [],  # generated: no source folder is read
}


def _source_folder(data: Data) -> Path | None:
    """The folder to copy the dataset's files from, or None to download them: the default
    folder (a placeholder in the repository, so that DVC can hash data.source as a dep) while
    it holds none of them. Any other folder must hold them all."""
    source = Path(data.source)
    if source == Path(DEFAULT_SOURCE) and not any(
            (source / name).is_file() for name in SOURCE_FILES[data.dataset]):
        return None
    if not source.is_dir():
        raise DatasetError(f"data.source = {data.source!r} is not a folder")
    return source


def fetch(raw: Path, data: Data) -> None:
    """Puts the dataset's files, verified, in its own folder under `raw`; nothing else there is
    touched (another dataset's files, an archive placed by hand)."""
    source = _source_folder(data)
    if data.dataset == "cifar10":
        fetch_cifar10(raw, source, data.verify)
    elif data.dataset == "fashion_mnist":
        fetch_fashion_mnist(raw, source, data.verify)
    else:
        fetch_synthetic(raw, data.synthetic_train, data.synthetic_test)
