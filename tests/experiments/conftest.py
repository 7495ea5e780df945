"""Shared fixtures for the harness tests: an isolated data lookup and writers of small dataset
files in the real formats (IDX, CIFAR pickle batches)."""
import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from tralgo.experiments import data as data_module

IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@pytest.fixture
def isolated_data(monkeypatch, tmp_path):
    """No $TRALGO_DATA, an empty home cache and no Debian Fashion-MNIST: only what a test writes
    is found. Returns the fake home folder."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.delenv(data_module.ENV_VAR, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(data_module, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian-dataset")
    return home


def idx_bytes(array: np.ndarray) -> bytes:
    """An unsigned-byte IDX file: magic 0x0000 0x08 ndim, big-endian int32 dims, then the data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx_dataset(folder: Path, n_train=12, n_test=5, size=28, gz=True, seed=0,
                      num_classes=10) -> dict:
    """Write the four IDX files (random content) into ``folder``; return the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {
        IDX_STEMS[0]: rng.integers(0, 256, (n_train, size, size), dtype=np.uint8),
        IDX_STEMS[1]: rng.integers(0, num_classes, n_train, dtype=np.uint8),
        IDX_STEMS[2]: rng.integers(0, 256, (n_test, size, size), dtype=np.uint8),
        IDX_STEMS[3]: rng.integers(0, num_classes, n_test, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        payload = idx_bytes(array)
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(payload))
        else:
            (folder / stem).write_bytes(payload)
    return arrays


def cifar_batch_bytes(images: np.ndarray, labels, label_key: bytes) -> bytes:
    """A batch as the official files hold it: a dict with bytes keys, data as uint8 [N, 3072]."""
    batch = {b"batch_label": b"test batch", label_key: [int(v) for v in labels],
             b"data": np.ascontiguousarray(images.reshape(len(images), -1), dtype=np.uint8)}
    return pickle.dumps(batch, protocol=2)


def write_cifar_folder(folder: Path, name: str, n_per_batch=4, seed=0) -> dict:
    """Write an extracted CIFAR folder (cifar-10-batches-py/ or cifar-100-python/) under
    ``folder``; return {"train": (images, labels), "test": (images, labels)}."""
    inner, train_members, test_member, label_key = data_module._CIFAR_LAYOUT[name]
    num_classes = data_module._NUM_CLASSES[name]
    rng = np.random.default_rng(seed)
    batch_dir = folder / inner
    batch_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, members in (("train", train_members), ("test", (test_member,))):
        parts = []
        for member in members:
            images = rng.integers(0, 256, (n_per_batch, 3, 32, 32), dtype=np.uint8)
            labels = rng.integers(0, num_classes, n_per_batch)
            (batch_dir / member).write_bytes(cifar_batch_bytes(images, labels,
                                                               label_key.encode()))
            parts.append((images, labels))
        written[split] = (np.concatenate([p[0] for p in parts]),
                          np.concatenate([p[1] for p in parts]))
    return written


@pytest.fixture
def writers():
    """The file writers above, for test modules (conftest is not importable under importlib)."""
    import types

    return types.SimpleNamespace(idx_bytes=idx_bytes, write_idx_dataset=write_idx_dataset,
                                 cifar_batch_bytes=cifar_batch_bytes,
                                 write_cifar_folder=write_cifar_folder, idx_stems=IDX_STEMS)
