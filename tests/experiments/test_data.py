import gzip
import hashlib
import pickle
import tarfile

import numpy as np
import pytest
import torch

from tralgo.experiments import data as data_module
from tralgo.experiments.data import DATASETS, DataError, ImageDataset, load_dataset, search_paths


# ------------------------------------------------------------------------------------------
# IDX (Fashion-MNIST / MNIST)
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("name", ["fashion-mnist", "mnist"])
def test_idx_dataset_loads_exact_content(isolated_data, tmp_path, writers, name, gz):
    arrays = writers.write_idx_dataset(tmp_path / "data" / name, n_train=12, n_test=5, gz=gz)
    ds = load_dataset(name, data_dir=tmp_path / "data")
    assert isinstance(ds, ImageDataset) and ds.name == name and ds.num_classes == 10
    assert ds.train_images.dtype == torch.uint8 and ds.train_images.shape == (12, 1, 28, 28)
    assert ds.test_images.shape == (5, 1, 28, 28) and ds.in_channels == 1
    assert ds.train_images.is_contiguous() and ds.test_images.is_contiguous()
    assert ds.train_labels.dtype == torch.int64 and ds.test_labels.dtype == torch.int64
    stems = writers.idx_stems
    np.testing.assert_array_equal(ds.train_images[:, 0].numpy(), arrays[stems[0]])
    np.testing.assert_array_equal(ds.train_labels.numpy(), arrays[stems[1]])
    np.testing.assert_array_equal(ds.test_images[:, 0].numpy(), arrays[stems[2]])
    np.testing.assert_array_equal(ds.test_labels.numpy(), arrays[stems[3]])
    assert len(ds.mean) == len(ds.std) == 1


def test_files_directly_in_data_dir_are_found(isolated_data, tmp_path, writers):
    arrays = writers.write_idx_dataset(tmp_path / "flat", n_train=3, n_test=2)
    ds = load_dataset("mnist", data_dir=tmp_path / "flat")
    np.testing.assert_array_equal(ds.train_labels.numpy(), arrays[writers.idx_stems[1]])


def test_named_subfolder_wins_over_files_directly_in_the_folder(isolated_data, tmp_path, writers):
    # MNIST and Fashion-MNIST share file names: <dir>/<name>/ is the specific match.
    writers.write_idx_dataset(tmp_path / "d", n_train=3, n_test=2, seed=1)
    sub = writers.write_idx_dataset(tmp_path / "d" / "fashion-mnist", n_train=4, n_test=2, seed=2)
    ds = load_dataset("fashion-mnist", data_dir=tmp_path / "d")
    np.testing.assert_array_equal(ds.train_labels.numpy(), sub[writers.idx_stems[1]])


def test_search_order_is_data_dir_alone_else_env_cache_then_debian(isolated_data, tmp_path, monkeypatch):
    monkeypatch.setenv("TRALGO_DATA", str(tmp_path / "env"))
    cache = isolated_data / ".cache" / "tralgo"
    assert search_paths("fashion-mnist", tmp_path / "arg") == [tmp_path / "arg" / "fashion-mnist", tmp_path / "arg"]
    assert search_paths("fashion-mnist") == [tmp_path / "env" / "fashion-mnist", tmp_path / "env",
                                             cache / "fashion-mnist", cache, data_module.DEBIAN_FASHION_MNIST]
    # The Debian package only provides Fashion-MNIST.
    assert search_paths("mnist") == [tmp_path / "env" / "mnist", tmp_path / "env",
                                     cache / "mnist", cache]


def test_earlier_lookup_location_wins(isolated_data, tmp_path, monkeypatch, writers):
    arg = writers.write_idx_dataset(tmp_path / "arg", n_train=2, n_test=1, seed=1)
    env = writers.write_idx_dataset(tmp_path / "env", n_train=3, n_test=1, seed=2)
    cache = writers.write_idx_dataset(isolated_data / ".cache" / "tralgo" / "mnist",
                                      n_train=4, n_test=1, seed=3)
    monkeypatch.setenv("TRALGO_DATA", str(tmp_path / "env"))
    labels = writers.idx_stems[1]
    np.testing.assert_array_equal(load_dataset("mnist", tmp_path / "arg").train_labels, arg[labels])
    with pytest.raises(DataError, match="only DIR is then searched"):  # no silent fall-back to env
        load_dataset("mnist", tmp_path / "empty")
    np.testing.assert_array_equal(load_dataset("mnist").train_labels, env[labels])
    monkeypatch.delenv("TRALGO_DATA")
    np.testing.assert_array_equal(load_dataset("mnist").train_labels, cache[labels])


def test_an_empty_or_missing_data_dir_is_refused_not_replaced_by_another_copy(isolated_data, tmp_path,
                                                                             monkeypatch, writers):
    # A copy in $TRALGO_DATA and one in the cache: neither may stand in for the folder asked for,
    # whose name config.json records.
    writers.write_idx_dataset(tmp_path / "env" / "fashion-mnist", n_train=3, n_test=2)
    writers.write_idx_dataset(isolated_data / ".cache" / "tralgo" / "fashion-mnist", n_train=3, n_test=2)
    monkeypatch.setenv("TRALGO_DATA", str(tmp_path / "env"))
    (tmp_path / "empty").mkdir()
    for requested in (tmp_path / "empty", tmp_path / "missing"):
        with pytest.raises(DataError, match="not found") as info:
            load_dataset("fashion-mnist", data_dir=requested)
        assert str(requested) in str(info.value) and str(tmp_path / "env") not in str(info.value)
    with pytest.raises(DataError, match="--data-dir must name a folder, got an empty path"):
        load_dataset("fashion-mnist", data_dir="")
    assert load_dataset("fashion-mnist").train_images.shape[0] == 3  # without --data-dir: the standard places


@pytest.mark.parametrize("shape", [(3, 20, 20), (3, 28, 27), (3, 784, 1)])
def test_idx_images_of_another_shape_name_the_file_and_the_expected_shape(isolated_data, tmp_path, writers,
                                                                          shape):
    writers.write_idx_dataset(tmp_path, n_train=3, n_test=2)
    target = tmp_path / "train-images-idx3-ubyte.gz"
    _write(target, writers.idx_bytes(np.zeros(shape, np.uint8)))
    with pytest.raises(DataError, match=r"images of shape \[%d, %d, %d\], expected \[N, 28, 28\]" % shape) as info:
        load_dataset("mnist", tmp_path)
    assert str(target) in str(info.value)


def test_train_cli_reports_an_idx_file_of_another_shape_in_one_line(isolated_data, tmp_path, writers, capsys):
    from tralgo.experiments import train_cli

    writers.write_idx_dataset(tmp_path / "data", n_train=16, n_test=8, size=20)
    code = train_cli.main(["--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--epochs", "1",
                           "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "expected [N, 28, 28]" in err, err


def _write(path, payload, gz=True):
    path.write_bytes(gzip.compress(payload) if gz else payload)


@pytest.mark.parametrize("corrupt, message", [
    (lambda b: b"\x08\x03" + b[2:], "magic number"),
    (lambda b: b[:2] + b"\x0d" + b[3:], "element type"),
    (lambda b: b[:-7], "truncated"),
    (lambda b: b + b"\x00", "trailing bytes"),
    (lambda b: b[:9], "truncated IDX header"),
    (lambda b: b[:2], "not an IDX file"),
])
def test_corrupt_idx_images_raise_data_error_naming_the_file(isolated_data, tmp_path, writers,
                                                             corrupt, message):
    arrays = writers.write_idx_dataset(tmp_path, n_train=3, n_test=2)
    target = tmp_path / "train-images-idx3-ubyte.gz"
    _write(target, corrupt(writers.idx_bytes(arrays["train-images-idx3-ubyte"])))
    with pytest.raises(DataError, match=message) as info:
        load_dataset("mnist", tmp_path)
    assert str(target) in str(info.value)


def test_wrong_dimension_count_is_reported(isolated_data, tmp_path, writers):
    writers.write_idx_dataset(tmp_path, n_train=3, n_test=2)
    _write(tmp_path / "t10k-labels-idx1-ubyte.gz", writers.idx_bytes(np.zeros((2, 2), np.uint8)))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: IDX file has 2 dimensions, "
                                        "expected 1"):
        load_dataset("mnist", tmp_path)


def test_truncated_gzip_is_reported(isolated_data, tmp_path, writers):
    writers.write_idx_dataset(tmp_path, n_train=3, n_test=2)
    target = tmp_path / "train-labels-idx1-ubyte.gz"
    target.write_bytes(target.read_bytes()[:-10])
    with pytest.raises(DataError, match="corrupt or truncated gzip") as info:
        load_dataset("mnist", tmp_path)
    assert str(target) in str(info.value)


def test_label_out_of_range_and_count_mismatch(isolated_data, tmp_path, writers):
    writers.write_idx_dataset(tmp_path, n_train=3, n_test=2)
    _write(tmp_path / "train-labels-idx1-ubyte.gz", writers.idx_bytes(np.array([0, 10, 1])))
    with pytest.raises(DataError, match=r"labels must lie in \[0, 9\], found \[0, 10\]"):
        load_dataset("mnist", tmp_path)
    _write(tmp_path / "train-labels-idx1-ubyte.gz", writers.idx_bytes(np.array([0, 1])))
    with pytest.raises(DataError, match="holds 3 images but .* holds 2 labels"):
        load_dataset("mnist", tmp_path)
    _write(tmp_path / "train-images-idx3-ubyte.gz", writers.idx_bytes(np.zeros((0, 28, 28))))
    _write(tmp_path / "train-labels-idx1-ubyte.gz", writers.idx_bytes(np.zeros(0)))
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz holds no images"):
        load_dataset("mnist", tmp_path)


# ------------------------------------------------------------------------------------------
# Missing data and bad names
# ------------------------------------------------------------------------------------------

def test_missing_dataset_gives_one_message_with_paths_and_remedies(isolated_data, tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist", data_dir=tmp_path / "nowhere")
    message = str(info.value)
    for path in search_paths("fashion-mnist", tmp_path / "nowhere"):
        assert str(path) in message
    for remedy in ("--data-dir", "TRALGO_DATA", "--download", "apt-get install dataset-fashion-mnist"):
        assert remedy in message
    with pytest.raises(DataError) as info:
        load_dataset("cifar100")
    assert "cifar-100-python.tar.gz" in str(info.value) and "apt-get" not in str(info.value)


def test_incomplete_idx_set_counts_as_missing(isolated_data, tmp_path, writers):
    writers.write_idx_dataset(tmp_path, n_train=3, n_test=2)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="not found"):
        load_dataset("mnist", tmp_path)


def test_unknown_dataset_name_lists_accepted_names():
    with pytest.raises(DataError, match="unknown dataset 'imagenet'; accepted: " + ", ".join(DATASETS)):
        load_dataset("imagenet")
    with pytest.raises(DataError, match="unknown dataset"):
        search_paths("svhn")


# ------------------------------------------------------------------------------------------
# CIFAR
# ------------------------------------------------------------------------------------------

def _tar_folder(folder, inner, tar_path):
    with tarfile.open(tar_path, "w:gz") as tar:
        tar.add(folder / inner, arcname=inner)


@pytest.mark.parametrize("name, classes", [("cifar10", 10), ("cifar100", 100)])
@pytest.mark.parametrize("packed", [False, True])
def test_cifar_loads_from_folder_and_tarball(isolated_data, tmp_path, writers, name, classes,
                                             packed):
    written = writers.write_cifar_folder(tmp_path / "src", name, n_per_batch=3)
    inner = data_module._CIFAR_LAYOUT[name][0]
    root = tmp_path / "data" / name
    root.mkdir(parents=True)
    if packed:
        _tar_folder(tmp_path / "src", inner, root / data_module._REMOTES[name][0].filename)
    else:
        (tmp_path / "src" / inner).rename(root / inner)
    ds = load_dataset(name, tmp_path / "data")
    assert ds.num_classes == classes and ds.in_channels == 3 and len(ds.mean) == 3
    n_train = 3 * len(data_module._CIFAR_LAYOUT[name][1])
    assert ds.train_images.shape == (n_train, 3, 32, 32) and ds.test_images.shape == (3, 3, 32, 32)
    assert ds.train_images.dtype == torch.uint8 and ds.train_images.is_contiguous()
    np.testing.assert_array_equal(ds.train_images.numpy(), written["train"][0])
    np.testing.assert_array_equal(ds.train_labels.numpy(), written["train"][1])
    np.testing.assert_array_equal(ds.test_images.numpy(), written["test"][0])
    np.testing.assert_array_equal(ds.test_labels.numpy(), written["test"][1])


def test_cifar_channel_layout_is_rgb_planes(isolated_data, tmp_path, writers):
    # A CIFAR row is 1024 red, then 1024 green, then 1024 blue values, each row-major 32x32.
    folder = tmp_path / "cifar-10-batches-py"
    writers.write_cifar_folder(tmp_path, "cifar10", n_per_batch=1)
    row = np.concatenate([np.full(1024, 10), np.full(1024, 20), np.arange(1024) % 256])
    (folder / "test_batch").write_bytes(writers.cifar_batch_bytes(row[None].astype(np.uint8), [7],
                                                                  b"labels"))
    ds = load_dataset("cifar10", tmp_path)
    image = ds.test_images[0]
    assert (image[0] == 10).all() and (image[1] == 20).all()
    assert image[2, 0, 1] == 1 and image[2, 1, 0] == 32 and ds.test_labels.tolist() == [7]


def test_extracted_folder_itself_can_be_the_data_dir(isolated_data, tmp_path, writers):
    writers.write_cifar_folder(tmp_path, "cifar10", n_per_batch=2)
    ds = load_dataset("cifar10", tmp_path / "cifar-10-batches-py")
    assert ds.train_images.shape[0] == 10


def test_corrupt_cifar_files_raise_data_error(isolated_data, tmp_path, writers):
    folder = tmp_path / "cifar-10-batches-py"
    writers.write_cifar_folder(tmp_path, "cifar10", n_per_batch=2)
    batch = folder / "data_batch_3"
    good = batch.read_bytes()

    batch.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="data_batch_3: corrupt or truncated CIFAR batch"):
        load_dataset("cifar10", tmp_path)

    batch.write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DataError, match=r"'data' must be a uint8 array of shape \[N, 3072\]"):
        load_dataset("cifar10", tmp_path)

    batch.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}))
    with pytest.raises(DataError, match="has no 'labels' entry"):
        load_dataset("cifar10", tmp_path)

    batch.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 12]}))
    with pytest.raises(DataError, match=r"labels must lie in \[0, 9\]"):
        load_dataset("cifar10", tmp_path)


class _Evil:
    def __reduce__(self):
        import os
        return (os.getcwd, ())


def test_cifar_unpickling_refuses_arbitrary_globals(isolated_data, tmp_path, writers):
    writers.write_cifar_folder(tmp_path, "cifar10", n_per_batch=2)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({b"data": _Evil()}))
    with pytest.raises(DataError, match="is not allowed in a CIFAR batch"):
        load_dataset("cifar10", tmp_path)


def test_truncated_or_incomplete_cifar_tarball(isolated_data, tmp_path, writers):
    writers.write_cifar_folder(tmp_path / "src", "cifar100", n_per_batch=2)
    tar_path = tmp_path / "data" / "cifar-100-python.tar.gz"
    tar_path.parent.mkdir()
    _tar_folder(tmp_path / "src", "cifar-100-python", tar_path)
    tar_path.write_bytes(tar_path.read_bytes()[:-200])
    with pytest.raises(DataError, match="corrupt or truncated tar archive") as info:
        load_dataset("cifar100", tmp_path / "data")
    assert str(tar_path) in str(info.value)

    (tmp_path / "src" / "cifar-100-python" / "test").unlink()
    _tar_folder(tmp_path / "src", "cifar-100-python", tar_path)
    with pytest.raises(DataError, match="archive has no file 'cifar-100-python/test'"):
        load_dataset("cifar100", tmp_path / "data")


# ------------------------------------------------------------------------------------------
# Download (local file:// mirrors only: no test touches the network)
# ------------------------------------------------------------------------------------------

def _serve_locally(monkeypatch, name, folder, mirrors):
    """Point ``name``'s remotes at files in ``folder`` with their real SHA-256."""
    remotes = tuple(
        data_module._Remote(r.filename, hashlib.sha256((folder / r.filename).read_bytes()).hexdigest(),
                            mirrors)
        for r in data_module._REMOTES[name])
    monkeypatch.setitem(data_module._REMOTES, name, remotes)


def test_download_fetches_verifies_and_caches(isolated_data, tmp_path, writers, monkeypatch):
    arrays = writers.write_idx_dataset(tmp_path / "server", n_train=4, n_test=2)
    good = (tmp_path / "server").as_uri() + "/"
    _serve_locally(monkeypatch, "mnist", tmp_path / "server", ("file:///does/not/exist/", good))
    target = isolated_data / ".cache" / "tralgo" / "mnist"
    ds = load_dataset("mnist", download=True)  # first mirror fails, second is used
    np.testing.assert_array_equal(ds.train_labels.numpy(), arrays[writers.idx_stems[1]])
    assert sorted(p.name for p in target.iterdir()) == sorted(f"{s}.gz" for s in writers.idx_stems)

    # Once cached, nothing is fetched again.
    monkeypatch.setattr(data_module, "_open_url", lambda *a, **k: pytest.fail("network used"))
    assert load_dataset("mnist", download=True).train_images.shape == (4, 1, 28, 28)


def test_download_rejects_a_checksum_mismatch_and_writes_nothing(isolated_data, tmp_path, writers,
                                                                 monkeypatch):
    writers.write_idx_dataset(tmp_path / "server", n_train=4, n_test=2)
    _serve_locally(monkeypatch, "fashion-mnist", tmp_path / "server",
                   ((tmp_path / "server").as_uri() + "/",))
    bad = data_module._REMOTES["fashion-mnist"][0]
    monkeypatch.setitem(data_module._REMOTES, "fashion-mnist",
                        (data_module._Remote(bad.filename, "0" * 64, bad.mirrors),
                         *data_module._REMOTES["fashion-mnist"][1:]))
    with pytest.raises(DataError, match="SHA-256 .* does not match the expected 0{64}"):
        load_dataset("fashion-mnist", data_dir=tmp_path / "cache", download=True)
    assert not (tmp_path / "cache" / "fashion-mnist" / bad.filename).exists()


def test_download_of_cifar_tarball_into_data_dir(isolated_data, tmp_path, writers, monkeypatch):
    written = writers.write_cifar_folder(tmp_path / "src", "cifar10", n_per_batch=2)
    server = tmp_path / "server"
    server.mkdir()
    _tar_folder(tmp_path / "src", "cifar-10-batches-py", server / "cifar-10-python.tar.gz")
    _serve_locally(monkeypatch, "cifar10", server, (server.as_uri() + "/",))
    ds = load_dataset("cifar10", data_dir=tmp_path / "mine", download=True)
    assert (tmp_path / "mine" / "cifar10" / "cifar-10-python.tar.gz").is_file()
    np.testing.assert_array_equal(ds.test_images.numpy(), written["test"][0])


def test_download_failure_names_every_url(isolated_data, tmp_path, monkeypatch):
    def refuse(url, timeout):
        raise OSError("connection refused")
    monkeypatch.setattr(data_module, "_open_url", refuse)
    with pytest.raises(DataError) as info:
        load_dataset("mnist", data_dir=tmp_path, download=True)
    for url in data_module._REMOTES["mnist"][0].urls:
        assert f"{url}: connection refused" in str(info.value)


def test_pinned_checksums_are_well_formed():
    for name in DATASETS:
        for remote in data_module._REMOTES[name]:
            assert len(remote.sha256) == 64 and int(remote.sha256, 16) >= 0
            assert all(url.startswith(("https://", "http://")) for url in remote.urls)


# ------------------------------------------------------------------------------------------
# The real Fashion-MNIST (Debian's dataset-fashion-mnist package)
# ------------------------------------------------------------------------------------------

@pytest.mark.skipif(not (data_module.DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").exists(),
                    reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist(monkeypatch, tmp_path):
    monkeypatch.delenv("TRALGO_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    ds = load_dataset("fashion-mnist")
    assert ds.train_images.shape == (60000, 1, 28, 28) and ds.test_images.shape == (10000, 1, 28, 28)
    assert ds.num_classes == 10
    assert torch.bincount(ds.train_labels).tolist() == [6000] * 10
    assert torch.bincount(ds.test_labels).tolist() == [1000] * 10
    # The normalisation constants are the training set's own statistics.
    pixels = ds.train_images.float() / 255
    assert pixels.mean().item() == pytest.approx(ds.mean[0], abs=5e-4)
    assert pixels.std().item() == pytest.approx(ds.std[0], abs=5e-4)


@pytest.mark.parametrize("protocol", [2, 4])
def test_cifar_batches_with_str_keys_and_any_protocol(isolated_data, tmp_path, writers, protocol):
    # The official files are python-2 pickles with bytes keys; re-pickled copies often use str keys.
    writers.write_cifar_folder(tmp_path, "cifar10", n_per_batch=2)
    images = np.arange(2 * 3072, dtype=np.int64).reshape(2, 3072).astype(np.uint8)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(
        pickle.dumps({"data": images, "labels": [3, 4]}, protocol=protocol))
    ds = load_dataset("cifar10", tmp_path)
    np.testing.assert_array_equal(ds.test_images.reshape(2, -1).numpy(), images)
    assert ds.test_labels.tolist() == [3, 4]
