"""Fashion-MNIST and MNIST from the four standard IDX ``.gz`` files.

Where the files come from, in order: an explicit ``data_dir``, ``$POLYLENET_DATA`` (a folder
holding ``fashion-mnist/`` and ``mnist/``), the user cache (``$XDG_CACHE_HOME/polylenet``, else
``~/.cache/polylenet``), then a download from the canonical mirrors, verified against the
canonical SHA-256 checksums and written atomically into the cache. Every folder is checked
structurally (IDX headers, sizes, counts) and, where it holds a ``SHA256SUMS`` file (as
``sha256sum`` writes it; a re-encoded copy brings its own), each file is hashed against it; the
cache is hashed against the canonical checksums. ``Dataset.checksums`` records what was verified.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import struct
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np

from polylenet.errors import PolylenetError

PathLike = Union[str, os.PathLike]
ENV_VAR = "POLYLENET_DATA"
SPLITS = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FILES = tuple(f for pair in SPLITS.values() for f in pair)


class DataError(PolylenetError, OSError):
    """Data that cannot be found, downloaded or read; the message says where to put the files."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    mirrors: tuple[str, ...]
    sha256: Mapping[str, str]
    classes: tuple[str, ...]


DATASETS = {
    "fashion-mnist": DatasetInfo(
        "fashion-mnist",
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        {
            "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        },
        ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
         "ankle boot"),
    ),
    "mnist": DatasetInfo(
        "mnist",
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        {
            "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
        tuple(str(d) for d in range(10)),
    ),
}

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: PathLike) -> np.ndarray:
    """Read an IDX file (gzipped or not), checking its magic number, dtype code and size.

    >>> import gzip, struct, tempfile, numpy as np
    >>> p = tempfile.mktemp(suffix=".gz")
    >>> with gzip.open(p, "wb") as f: _ = f.write(struct.pack(">HBBI", 0, 8, 1, 3) + bytes([7, 8, 9]))
    >>> read_idx(p)
    array([7, 8, 9], dtype=uint8)
    """
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except PermissionError as exc:
        raise DataError(f"{path}: cannot read it: {exc.strerror} (check its permissions)") from None
    except FileNotFoundError:
        raise DataError(f"{path}: missing") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read ({exc}); the file is damaged or not gzip: "
                        "delete it and fetch it again") from None
    if len(raw) < 4:
        raise DataError(f"{path}: {len(raw)} bytes is too short for an IDX header")
    zero, code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or code not in _IDX_DTYPES or ndim < 1:
        raise DataError(f"{path}: not an IDX file (magic bytes {raw[:4].hex()}; expected 0000 then "
                        "a dtype code such as 08 and the number of dimensions)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = math.prod(dims) * dtype.itemsize  # Python ints: absurd dims cannot overflow
    if len(raw) - header != expected:
        raise DataError(f"{path}: IDX header says {dims} ({expected} bytes of data) but the file "
                        f"holds {len(raw) - header}; it is truncated or corrupt: fetch it again")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


@dataclass(frozen=True)
class Dataset:
    """uint8 images (N, 28, 28) and labels (N,) of both splits, and where they were read from."""

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: Path
    checksums: Mapping[str, str] = field(default_factory=dict)  # file -> verified SHA-256


SUMS_FILE = "SHA256SUMS"


def sha256_of(path: PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def expected_checksums(folder: Path, name: str) -> dict[str, str]:
    """What the four files in ``folder`` must hash to: its ``SHA256SUMS``, else the canonical
    checksums for the cache (what :func:`download` verified), else nothing (structure only)."""
    sums_file = folder / SUMS_FILE
    if sums_file.is_file():
        sums = {}
        for number, line in enumerate(sums_file.read_text().splitlines(), 1):
            parts = line.split()
            if len(parts) == 2 and len(parts[0]) == 64:
                sums[parts[1].lstrip("*")] = parts[0].lower()
            elif line.strip():
                raise DataError(f"{sums_file}: line {number} is not '<sha256>  <file>': {line[:80]!r}")
        missing = [f for f in FILES if f not in sums]
        if missing:
            raise DataError(f"{sums_file} lists no checksum for {', '.join(missing)}; add them (sha256sum "
                            f"{' '.join(FILES)} > {SUMS_FILE}) or remove the file")
        return {f: sums[f] for f in FILES}
    if folder == cache_dir() / name:
        return dict(DATASETS[name].sha256)
    return {}


def verify_checksums(folder: Path, name: str) -> dict[str, str]:
    """Hash the four files against :func:`expected_checksums`; DataError naming the first that differs."""
    expected = expected_checksums(folder, name)
    for filename, want in expected.items():
        got = sha256_of(folder / filename)
        if got != want:
            source = folder / SUMS_FILE if (folder / SUMS_FILE).is_file() else f"{name}'s canonical checksum"
            raise DataError(f"{folder / filename}: SHA-256 {got} does not match {want} from {source}; the file is "
                            "damaged or another version: copy it again (or delete it to download it again)")
    return expected


def _read_folder(folder: Path, name: str) -> Dataset:
    checksums = verify_checksums(folder, name)
    arrays = {}
    for split, (images_file, labels_file) in SPLITS.items():
        images, labels = read_idx(folder / images_file), read_idx(folder / labels_file)
        if images.ndim != 3 or labels.ndim != 1:
            raise DataError(f"{folder}: {images_file} must hold (N, rows, cols) images and "
                            f"{labels_file} (N,) labels; got {images.shape} and {labels.shape}")
        if images.dtype != np.uint8:
            raise DataError(f"{folder}: {images_file} holds {images.dtype} values; images must be uint8 pixels "
                            "(IDX type 0x08, 0-255), which polylenet scales to [0, 1]")
        if len(images) != len(labels):
            raise DataError(f"{folder}: {images_file} holds {len(images)} images but "
                            f"{labels_file} {len(labels)} labels")
        classes = len(DATASETS[name].classes)
        if labels.size and (labels.min() < 0 or labels.max() >= classes):
            bad = labels.min() if labels.min() < 0 else labels.max()
            raise DataError(f"{folder}: {labels_file} has label {bad}; {name} labels are 0 to {classes - 1}")
        arrays[split] = (images.astype(np.uint8), labels.astype(np.int32))
    return Dataset(name, *arrays["train"], *arrays["test"], source=folder, checksums=checksums)


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/polylenet``, else ``~/.cache/polylenet``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "polylenet"


def candidate_dirs(name: str, data_dir: Optional[PathLike] = None) -> list[Path]:
    """The folders searched for ``name``'s four files, in order."""
    found = []
    if data_dir is not None:
        found += [Path(data_dir) / name, Path(data_dir)]
    if os.environ.get(ENV_VAR):
        found.append(Path(os.environ[ENV_VAR]) / name)
    found.append(cache_dir() / name)
    return found


def _has_files(folder: Path) -> bool:
    return all((folder / f).is_file() for f in FILES)


def download(name: str, dest: PathLike, mirrors: Optional[Sequence[str]] = None,
             sha256: Optional[Mapping[str, str]] = None, timeout: float = 60.0) -> Path:
    """Fetch the four files into ``dest``, verifying each SHA-256 before it is renamed into place.

    ``mirrors`` and ``sha256`` default to the data set's canonical ones. A file whose checksum
    does not match, or that arrives truncated, is deleted and the next mirror is tried.
    """
    info = DATASETS[name]
    mirrors = tuple(mirrors or info.mirrors)
    sha256 = dict(sha256 or info.sha256)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for filename in FILES:
        if (dest / filename).is_file() and sha256_of(dest / filename) == sha256[filename]:
            continue  # a file already there is kept only when it is the one the checksum names
        failures = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + filename
            try:
                _fetch(url, dest / filename, sha256[filename], timeout)
                break
            except (OSError, ValueError) as exc:
                failures.append(f"{url}: {exc}")
        else:
            raise DataError(f"could not download {filename} of {name}:\n  " + "\n  ".join(failures))
    return dest


def _fetch(url: str, target: Path, expected_sha256: str, timeout: float) -> None:
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            received = 0
            while chunk := response.read(1 << 16):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
        if length is not None and received != int(length):
            raise ValueError(f"truncated: received {received} of {length} bytes")
        if digest.hexdigest() != expected_sha256:
            raise ValueError(f"checksum mismatch: SHA-256 {digest.hexdigest()}, expected {expected_sha256}")
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise


def load_data(name: str = "fashion-mnist", data_dir: Optional[PathLike] = None,
              allow_download: bool = True) -> Dataset:
    """Find (or download) and read a data set.

    >>> ds = load_data("fashion-mnist")  # doctest: +SKIP
    >>> ds.train_images.shape, ds.test_labels.shape  # doctest: +SKIP
    ((60000, 28, 28), (10000,))
    """
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; known: {sorted(DATASETS)}")
    candidates = candidate_dirs(name, data_dir)
    if data_dir is not None:  # a path the user gave must hold the data; the fallbacks are for no path
        given = Path(data_dir)
        for folder in candidates[:2]:
            if _has_files(folder):
                return _read_folder(folder, name)
        if not given.is_dir():
            raise DataError(f"--data-dir {given}: {'is a file, not a folder' if given.exists() else 'does not exist'}; "
                            f"give the folder that holds {name}/ (or the four files)")
        missing = [f for f in FILES if not (given / name / f).is_file()]
        raise DataError(f"--data-dir {given}: no {name} data set there (missing {', '.join(missing)} in "
                        f"{given / name}, nor all four in {given})")
    for folder in candidates:
        if _has_files(folder):
            return _read_folder(folder, name)
    cache = cache_dir() / name
    reason = "downloads are off"
    if allow_download:
        try:
            return _read_folder(download(name, cache), name)
        except DataError as exc:
            reason = str(exc)
    where = "\n  ".join(str(c) for c in candidates)
    raise DataError(
        f"{name} not found. Looked in:\n  {where}\nand the download failed: {reason}\n"
        f"Put the four files ({', '.join(FILES)}) in {cache}, or in <dir>/{name}/ and set "
        f"{ENV_VAR}=<dir> (or pass --data-dir <dir>).")
