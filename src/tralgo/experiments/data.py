"""Image-classification datasets held whole in memory as uint8 tensors.

Supported: Fashion-MNIST and MNIST (IDX files, gzipped or not) and CIFAR-10/100 (the python-pickle
tarball or its extracted folder). Every file is parsed and validated here: a corrupt or truncated
file raises :class:`DataError` naming the file and what is wrong, never an error from deep inside
gzip, numpy or pickle.

Lookup (see :func:`search_paths`): a ``data_dir`` argument is the only place looked at (a run
that records ``--data-dir X`` was trained on X's files, never on a copy found elsewhere); without
one, ``$TRALGO_DATA``, ``~/.cache/tralgo`` and, for Fashion-MNIST, Debian's
``/usr/share/datasets/fashion-mnist`` (``apt-get install dataset-fashion-mnist``), in this order.
In each base folder the files may sit in a subfolder
named after the dataset (``<dir>/fashion-mnist/``), which is looked at first because MNIST and
Fashion-MNIST use the same file names, or directly in the folder.

``download=True`` fetches the official files, checks their SHA-256 against the constants below and
writes them atomically into ``<first writable cache dir>/<dataset>/``.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from tralgo.experiments.io import atomic_write_bytes

__all__ = ["DATASETS", "DataError", "ImageDataset", "load_dataset", "search_paths"]

DATASETS = ("fashion-mnist", "mnist", "cifar10", "cifar100")

ENV_VAR = "TRALGO_DATA"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


class DataError(Exception):
    """A dataset is missing, corrupt or unknown; the message is complete and user-facing."""


@dataclass(frozen=True)
class ImageDataset:
    name: str
    train_images: torch.Tensor  # uint8 [N, C, H, W], contiguous
    train_labels: torch.Tensor  # int64 [N]
    test_images: torch.Tensor  # uint8 [M, C, H, W]
    test_labels: torch.Tensor  # int64 [M]
    num_classes: int
    mean: tuple[float, ...]  # per channel, in [0, 1] pixel units
    std: tuple[float, ...]

    @property
    def in_channels(self) -> int:
        return int(self.train_images.shape[1])


# --------------------------------------------------------------------------------------------
# What each dataset is: files, checksums, mirrors, normalisation.
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Remote:
    """One downloadable file: its name, SHA-256 and the mirrors that serve it (tried in order)."""

    filename: str
    sha256: str
    mirrors: tuple[str, ...]

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(base + self.filename for base in self.mirrors)


_IDX_FILES = {  # split -> (images file, labels file), names without ".gz"
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

_FASHION_MIRRORS = (
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
)
_MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
_CIFAR_MIRRORS = ("https://www.cs.toronto.edu/~kriz/",)

# SHA-256 of the official files. Each value was cross-checked against several independent
# published manifests (TensorFlow Datasets / Keras, torchvision's prototype datasets); the
# official MD5s torchvision publishes are recorded beside them for reference.
_REMOTES: dict[str, tuple[_Remote, ...]] = {
    "fashion-mnist": (
        # md5 8d4fb7e6c68d591d4c3dfef9ec88bf0d
        _Remote("train-images-idx3-ubyte.gz",
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84", _FASHION_MIRRORS),
        # md5 25c81989df183df01b3e8a0aad5dffbe
        _Remote("train-labels-idx1-ubyte.gz",
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845", _FASHION_MIRRORS),
        # md5 bef4ecab320f06d8554ea6380940ec79
        _Remote("t10k-images-idx3-ubyte.gz",
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073", _FASHION_MIRRORS),
        # md5 bb300cfdad3c16e7a12a480ee83cd310
        _Remote("t10k-labels-idx1-ubyte.gz",
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", _FASHION_MIRRORS),
    ),
    "mnist": (
        # md5 f68b3c2dcbeaaa9fbdd348bbdeb94873
        _Remote("train-images-idx3-ubyte.gz",
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", _MNIST_MIRRORS),
        # md5 d53e105ee54ea40749a09fcbcd1e9432
        _Remote("train-labels-idx1-ubyte.gz",
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", _MNIST_MIRRORS),
        # md5 9fb629c4189551a2d022fa330f9573f3
        _Remote("t10k-images-idx3-ubyte.gz",
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", _MNIST_MIRRORS),
        # md5 ec29112dd5afa0611ce80d1b7f02629c
        _Remote("t10k-labels-idx1-ubyte.gz",
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", _MNIST_MIRRORS),
    ),
    "cifar10": (
        # md5 c58f30108f718f92721af3b95e74349a
        _Remote("cifar-10-python.tar.gz",
                "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce", _CIFAR_MIRRORS),
    ),
    "cifar100": (
        # md5 eb9058c3a382ffc7106e4002c42a8d85
        _Remote("cifar-100-python.tar.gz",
                "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7", _CIFAR_MIRRORS),
    ),
}

_NUM_CLASSES = {"fashion-mnist": 10, "mnist": 10, "cifar10": 10, "cifar100": 100}

# Per-channel statistics of the training images. The CIFAR values are the ones the authors'
# scripts use for both CIFAR-10 and CIFAR-100 (the widespread CIFAR-10 constants), kept so that
# runs reproduce theirs. Fashion-MNIST/MNIST: mean and std over all training pixels.
_NORMALISATION = {
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
}

# CIFAR layout: (folder inside the tarball, train members, test member, label key).
_CIFAR_LAYOUT = {
    "cifar10": ("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch",
                "labels"),
    "cifar100": ("cifar-100-python", ("train",), "test", "fine_labels"),
}


def _check_name(name: str) -> str:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; accepted: {', '.join(DATASETS)}")
    return name


# --------------------------------------------------------------------------------------------
# Where to look.
# --------------------------------------------------------------------------------------------

def _base_dirs(data_dir: str | os.PathLike | None) -> list[Path]:
    """Base folders a user or the cache may hold data in, in lookup order (no duplicates)."""
    if data_dir is not None:
        if not str(data_dir).strip():
            raise DataError("--data-dir must name a folder, got an empty path (omit it to search the "
                            f"standard places: ${ENV_VAR}, ~/.cache/tralgo)")
        return [Path(data_dir).expanduser()]
    bases: list[Path] = []
    env = os.environ.get(ENV_VAR)
    if env:
        bases.append(Path(env).expanduser())
    bases.append(Path("~/.cache/tralgo").expanduser())
    return list(dict.fromkeys(bases))


def search_paths(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched for ``name``'s files, in lookup order."""
    _check_name(name)
    paths: list[Path] = []
    for base in _base_dirs(data_dir):
        # The named subfolder first: MNIST and Fashion-MNIST share file names, so files lying
        # directly in a shared folder are the less specific match.
        paths += [base / name, base]
    if name == "fashion-mnist" and data_dir is None:
        paths.append(DEBIAN_FASHION_MNIST)
    return list(dict.fromkeys(paths))


def _find_idx_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _idx_files_in(folder: Path) -> dict[str, Path] | None:
    """stem -> path when all four IDX files are in ``folder``, else None."""
    found = {}
    for stems in _IDX_FILES.values():
        for stem in stems:
            path = _find_idx_file(folder, stem)
            if path is None:
                return None
            found[stem] = path
    return found


def _cifar_source_in(folder: Path, name: str) -> Path | None:
    """The extracted batch folder or the tarball for ``name`` in ``folder``, else None."""
    inner, train_members, test_member, _ = _CIFAR_LAYOUT[name]
    tarball = folder / _REMOTES[name][0].filename
    for batch_dir in (folder / inner, folder):  # `folder` may be the extracted folder itself
        if all((batch_dir / m).is_file() for m in (*train_members, test_member)):
            return batch_dir
    if tarball.is_file():
        return tarball
    return None


def _locate(name: str, data_dir: str | os.PathLike | None):
    for folder in search_paths(name, data_dir):
        if not folder.is_dir():
            continue
        found = _cifar_source_in(folder, name) if name.startswith("cifar") else _idx_files_in(folder)
        if found is not None:
            return found
    return None


def _missing_message(name: str, data_dir, cache_dir_hint: Path) -> str:
    wanted = (", ".join(r.filename for r in _REMOTES[name]) if name.startswith("cifar")
              else ", ".join(f"{s}[.gz]" for stems in _IDX_FILES.values() for s in stems))
    if name.startswith("cifar"):
        inner = _CIFAR_LAYOUT[name][0]
        wanted += f" (or its extracted folder {inner}/)"
    lines = [f"dataset {name!r} not found: looked for {wanted} in:"]
    lines += [f"  {p}" for p in search_paths(name, data_dir)]
    lines += [
        "Ways to get it:",
        "  - pass --data-dir DIR (files in DIR or DIR/" + name + "/; only DIR is then searched)",
        f"  - set {ENV_VAR}=DIR",
        f"  - pass --download to fetch the official files (SHA-256 checked) into {cache_dir_hint}",
    ]
    if name == "fashion-mnist":
        lines.append("  - apt-get install dataset-fashion-mnist (installs to "
                     f"{DEBIAN_FASHION_MNIST})")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# IDX parsing (MNIST / Fashion-MNIST).
# --------------------------------------------------------------------------------------------

_IDX_UBYTE = 0x08
_IDX_IMAGE_SHAPE = (28, 28)  # the models' MNIST input size; any other is a wrong or damaged file


def _read_maybe_gzip(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: corrupt or truncated gzip data ({e})") from None


def parse_idx(data: bytes, source: str | os.PathLike, expected_ndim: int) -> np.ndarray:
    """Decode an unsigned-byte IDX file (big-endian header) into a uint8 array, validating it."""
    if len(data) < 4:
        raise DataError(f"{source}: not an IDX file (only {len(data)} bytes)")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0:
        raise DataError(f"{source}: not an IDX file (magic number {data[:4].hex()} does not start "
                        "with two zero bytes)")
    if dtype_code != _IDX_UBYTE:
        raise DataError(f"{source}: IDX element type 0x{dtype_code:02x} is not unsigned byte (0x08)")
    if ndim != expected_ndim:
        raise DataError(f"{source}: IDX file has {ndim} dimensions, expected {expected_ndim}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{source}: truncated IDX header ({len(data)} of {header} bytes)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise DataError(f"{source}: {what}: header says dims {list(dims)} -> {expected} bytes, "
                        f"file has {len(data)}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _load_idx_split(files: dict[str, Path], split: str, num_classes: int):
    images_stem, labels_stem = _IDX_FILES[split]
    images_path, labels_path = files[images_stem], files[labels_stem]
    images = parse_idx(_read_maybe_gzip(images_path), images_path, expected_ndim=3)
    if images.shape[1:] != _IDX_IMAGE_SHAPE:
        raise DataError(f"{images_path}: images of shape {list(images.shape)}, expected "
                        f"[N, {', '.join(map(str, _IDX_IMAGE_SHAPE))}] (MNIST and Fashion-MNIST are 28x28)")
    labels = parse_idx(_read_maybe_gzip(labels_path), labels_path, expected_ndim=1)
    if len(images) != len(labels):
        raise DataError(f"{images_path} holds {len(images)} images but {labels_path} holds "
                        f"{len(labels)} labels")
    if len(images) == 0:
        raise DataError(f"{images_path} holds no images")
    _check_labels(labels, num_classes, labels_path)
    return (torch.from_numpy(images.copy()).unsqueeze(1).contiguous(),
            torch.from_numpy(labels.astype(np.int64)))


def _check_labels(labels: np.ndarray, num_classes: int, source) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{source}: labels must lie in [0, {num_classes - 1}], found "
                        f"[{labels.min()}, {labels.max()}]")


# --------------------------------------------------------------------------------------------
# CIFAR python-pickle batches.
# --------------------------------------------------------------------------------------------

class _CifarUnpickler(pickle.Unpickler):
    """Allows only what a CIFAR batch holds (dicts, lists, numpy arrays): unpickling arbitrary
    globals would run arbitrary code from a data file."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by python 3 store bytes
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")


def _unpickle_batch(data: bytes, source: str) -> dict:
    try:
        batch = _CifarUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # pickle raises many types on garbage; all mean "corrupt"
        raise DataError(f"{source}: corrupt or truncated CIFAR batch ({type(e).__name__}: {e})") \
            from None
    if not isinstance(batch, dict):
        raise DataError(f"{source}: a CIFAR batch must be a dict, found {type(batch).__name__}")
    # The official files are python-2 pickles with bytes keys; accept str keys too.
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in batch.items()}


def _decode_cifar_batch(data: bytes, source: str, label_key: str, num_classes: int):
    batch = _unpickle_batch(data, source)
    for key in ("data", label_key):
        if key not in batch:
            raise DataError(f"{source}: CIFAR batch has no {key!r} entry (keys: {sorted(batch)})")
    images = batch["data"]
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 2
            and images.shape[1] == 3 * 32 * 32):
        shape = getattr(images, "shape", None)
        dtype = getattr(images, "dtype", type(images).__name__)
        raise DataError(f"{source}: 'data' must be a uint8 array of shape [N, 3072], found "
                        f"{dtype} {shape}")
    try:
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except (TypeError, ValueError):
        raise DataError(f"{source}: {label_key!r} is not a list of integers") from None
    if labels.shape != (images.shape[0],):
        raise DataError(f"{source}: {images.shape[0]} images but {label_key!r} has shape "
                        f"{list(labels.shape)}")
    _check_labels(labels, num_classes, source)
    return images.reshape(-1, 3, 32, 32), labels


def _read_cifar_members(source: Path, name: str, members: tuple[str, ...]) -> list[tuple[bytes, str]]:
    """(bytes, printable source) of each batch, from the extracted folder or the tarball."""
    if source.is_dir():
        out = []
        for member in members:
            path = source / member
            try:
                out.append((path.read_bytes(), str(path)))
            except OSError as e:
                raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
        return out

    inner = _CIFAR_LAYOUT[name][0]
    out = []
    try:
        with tarfile.open(source, "r:*") as tar:
            for member in members:
                key = f"{inner}/{member}"
                try:
                    f = tar.extractfile(key)
                except KeyError:
                    f = None
                if f is None:
                    raise DataError(f"{source}: archive has no file {key!r}")
                out.append((f.read(), f"{source}:{key}"))
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataError(f"{source}: corrupt or truncated tar archive ({e})") from None
    return out


def _load_cifar(source: Path, name: str):
    _, train_members, test_member, label_key = _CIFAR_LAYOUT[name]
    num_classes = _NUM_CLASSES[name]
    raw = _read_cifar_members(source, name, (*train_members, test_member))

    def stack(batches):
        parts = [_decode_cifar_batch(data, src, label_key, num_classes) for data, src in batches]
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels)

    return (*stack(raw[:-1]), *stack(raw[-1:]))


# --------------------------------------------------------------------------------------------
# Download.
# --------------------------------------------------------------------------------------------

# Replaceable in tests (no test may use the network).
_open_url: Callable = urllib.request.urlopen
_DOWNLOAD_TIMEOUT_S = 60


def _cache_dir(name: str, data_dir) -> Path:
    """The first writable base folder's ``<name>/`` subfolder (created)."""
    tried = []
    for base in _base_dirs(data_dir):
        target = base / name
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            tried.append(f"{target} ({e.strerror or e})")
            continue
        if os.access(target, os.W_OK):
            return target
        tried.append(f"{target} (not writable)")
    raise DataError("no writable folder to download into; tried: " + "; ".join(tried))


def _fetch(remote: _Remote) -> bytes:
    errors = []
    for url in remote.urls:
        try:
            with _open_url(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
                data = response.read()
        except Exception as e:  # URLError, HTTPError, timeouts, resets: try the next mirror
            errors.append(f"{url}: {e}")
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest == remote.sha256:
            return data
        errors.append(f"{url}: SHA-256 {digest} does not match the expected {remote.sha256}")
    raise DataError(f"could not download {remote.filename}:\n  " + "\n  ".join(errors))


def _download(name: str, data_dir) -> Path:
    target = _cache_dir(name, data_dir)
    for remote in _REMOTES[name]:
        path = target / remote.filename
        if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == remote.sha256:
            continue
        atomic_write_bytes(path, _fetch(remote))
    return target


# --------------------------------------------------------------------------------------------
# Entry point.
# --------------------------------------------------------------------------------------------

def load_dataset(name: str, data_dir: str | os.PathLike | None = None,
                 download: bool = False) -> ImageDataset:
    """Load a whole dataset into memory (see the module docstring for where it is looked for)."""
    _check_name(name)
    found = _locate(name, data_dir)
    if found is None and download:
        _download(name, data_dir)
        found = _locate(name, data_dir)
    if found is None:
        hint = _base_dirs(data_dir)[0] / name
        raise DataError(_missing_message(name, data_dir, hint))

    num_classes = _NUM_CLASSES[name]
    if name.startswith("cifar"):
        train_x, train_y, test_x, test_y = _load_cifar(found, name)
    else:
        train_x, train_y = _load_idx_split(found, "train", num_classes)
        test_x, test_y = _load_idx_split(found, "test", num_classes)
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DataError(f"{name}: train images are {list(train_x.shape[1:])} but test images are "
                        f"{list(test_x.shape[1:])}")
    mean, std = _NORMALISATION[name]
    return ImageDataset(name=name, train_images=train_x, train_labels=train_y,
                        test_images=test_x, test_labels=test_y, num_classes=num_classes,
                        mean=mean, std=std)
