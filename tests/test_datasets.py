"""bench.datasets on tiny generated data in the official layouts (no network, no /work/shared)."""
from __future__ import annotations

import gzip
import os
import pickle
import socket
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from bench import datasets as D
from bench.datasets import DATASETS, ArrayDataset, DataError, load_dataset
from fakedata import (make_data_root, omniglot_png, write_cifar10, write_cifar100, write_mnist,
                      write_omniglot)

REAL_ROOT = Path("/work/shared/data")


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    """Keep the Omniglot cache out of the user's home."""
    path = tmp_path / "cache"
    monkeypatch.setenv("BENCH_CACHE_DIR", str(path))
    return path


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to download fails the test."""
    def refuse(*args, **kwargs):
        pytest.fail("a test tried to download")  # a BaseException: the loader cannot swallow it
    for name, (_, folder) in list(D._FETCHERS.items()):
        monkeypatch.setitem(D._FETCHERS, name, (refuse, folder))


def load_quietly(name: str, root: Path) -> ArrayDataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_dataset(name, root, download=False)


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def check_common(ds: ArrayDataset, name: str, chw: tuple[int, int, int]) -> None:
    assert ds.name == name
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        assert x.dtype == torch.uint8 and y.dtype == torch.int64
        assert x.shape[1:] == chw and x.shape[0] == y.shape[0] and y.ndim == 1
        assert int(y.min()) >= 0 and int(y.max()) < ds.n_classes


# ---------------------------------------------------------------- names and interface

def test_dataset_names():
    assert DATASETS == ("mnist", "cifar10", "cifar100", "omniglot")


def test_unknown_name_lists_valid_names(tmp_path):
    with pytest.raises(ValueError) as err:
        load_dataset("svhn", tmp_path, download=False)
    for name in DATASETS:
        assert name in str(err.value)


def test_official_md5s_agree_with_torchvision():
    import torchvision.datasets as tvd
    for fname, md5 in tvd.MNIST.resources:
        assert D._MNIST_MD5[fname] == md5
    for name, cls in (("cifar10", tvd.CIFAR10), ("cifar100", tvd.CIFAR100)):
        fmt = D._CIFAR[name]
        assert fmt.folder == cls.base_folder
        assert [f for f, _ in cls.train_list] == list(fmt.train)
        assert [f for f, _ in cls.test_list] == list(fmt.test)
        assert (fmt.meta, fmt.names_key) == (cls.meta["filename"], cls.meta["key"])
        listed = {**dict(cls.train_list), **dict(cls.test_list)}
        assert fmt.md5 == {**listed, cls.meta["filename"]: cls.meta["md5"]}


# ---------------------------------------------------------------- MNIST

@pytest.mark.parametrize("compress", [False, True])
def test_mnist_loads_exact_arrays(tmp_path, compress):
    fake = write_mnist(tmp_path, n_train_per_class=3, n_test_per_class=2, compress=compress)
    with pytest.warns(UserWarning, match="differs from the official"):
        ds = load_dataset("mnist", tmp_path, download=False)
    check_common(ds, "mnist", (1, 28, 28))
    assert ds.class_names == [str(d) for d in range(10)]
    assert np.array_equal(ds.x_train.numpy(), fake.x_train)
    assert np.array_equal(ds.y_train.numpy(), fake.y_train)
    assert np.array_equal(ds.x_test.numpy(), fake.x_test)
    assert np.array_equal(ds.y_test.numpy(), fake.y_test)
    assert np.bincount(ds.y_train.numpy()).tolist() == [3] * 10
    suffix = ".gz" if compress else ""
    expected = {f"MNIST/raw/{p.name}" for p in fake.files}
    assert set(ds.checksums) == expected and all(k.endswith(suffix) for k in expected)
    assert sorted(ds.mismatched) == sorted(expected) and ds.unverified == []
    assert not ds.official


def test_mnist_subset_of_classes_keeps_global_ids(tmp_path):
    write_mnist(tmp_path, n_train_per_class=2, n_test_per_class=1, classes=[3, 7])
    ds = load_quietly("mnist", tmp_path)
    assert set(ds.y_train.tolist()) == {3, 7} and ds.n_classes == 10


def test_mnist_prefers_plain_file_over_gz(tmp_path):
    fake = write_mnist(tmp_path, n_train_per_class=1, n_test_per_class=1)
    gz = fake.path / "raw" / "train-images-idx3-ubyte.gz"
    gz.write_bytes(b"not gzip at all")  # would fail if it were read
    ds = load_quietly("mnist", tmp_path)
    assert "MNIST/raw/train-images-idx3-ubyte" in ds.checksums
    assert "MNIST/raw/train-images-idx3-ubyte.gz" not in ds.checksums


@pytest.mark.parametrize("fname", ["train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"])
def test_mnist_truncated_idx_names_file(tmp_path, fname):
    write_mnist(tmp_path, n_train_per_class=2, n_test_per_class=2)
    path = tmp_path / "MNIST" / "raw" / fname
    truncate(path, 0.9)
    with pytest.raises(DataError, match="truncated") as err:
        load_quietly("mnist", tmp_path)
    assert str(path) in str(err.value)


def test_mnist_truncated_gz_names_file(tmp_path):
    write_mnist(tmp_path, n_train_per_class=2, n_test_per_class=2, compress=True)
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    truncate(path, 0.5)
    with pytest.raises(DataError) as err:
        load_quietly("mnist", tmp_path)
    assert str(path) in str(err.value)


def test_mnist_gz_with_truncated_content_names_file(tmp_path):
    fake = write_mnist(tmp_path, n_train_per_class=2, n_test_per_class=2, compress=True)
    path = fake.path / "raw" / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-5]))
    with pytest.raises(DataError, match="truncated") as err:
        load_quietly("mnist", tmp_path)
    assert str(path) in str(err.value)


def test_mnist_bad_magic_and_trailing_bytes(tmp_path):
    write_mnist(tmp_path, n_train_per_class=1, n_test_per_class=1)
    path = tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    data = path.read_bytes()
    path.write_bytes(data + b"\0")
    with pytest.raises(DataError, match="trailing") as err:
        load_quietly("mnist", tmp_path)
    assert str(path) in str(err.value)
    path.write_bytes(b"\x00\x00\x09\x01" + data[4:])
    with pytest.raises(DataError, match="magic") as err:
        load_quietly("mnist", tmp_path)
    assert str(path) in str(err.value)


def test_mnist_image_label_count_mismatch(tmp_path):
    write_mnist(tmp_path, n_train_per_class=2, n_test_per_class=1)
    other = tmp_path / "other"
    write_mnist(other, n_train_per_class=3, n_test_per_class=1)
    os.replace(other / "MNIST" / "raw" / "train-labels-idx1-ubyte",
               tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte")
    with pytest.raises(DataError, match="train-labels-idx1-ubyte"):
        load_quietly("mnist", tmp_path)


# ---------------------------------------------------------------- CIFAR

@pytest.mark.parametrize("str_keys", [False, True])
def test_cifar10_loads_exact_arrays(tmp_path, str_keys):
    fake = write_cifar10(tmp_path, n_train_per_class=3, n_test_per_class=2, str_keys=str_keys)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_dataset("cifar10", tmp_path, download=False)
    check_common(ds, "cifar10", (3, 32, 32))
    assert ds.class_names == fake.class_names
    # Same pixels in the same order: the rows are R, G, B planes of 32x32.
    assert np.array_equal(ds.x_train.numpy(), fake.x_train)
    assert np.array_equal(ds.y_train.numpy(), fake.y_train)
    assert np.array_equal(ds.x_test.numpy(), fake.x_test)
    assert np.array_equal(ds.y_test.numpy(), fake.y_test)
    files = [f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)]
    files += ["cifar-10-batches-py/test_batch", "cifar-10-batches-py/batches.meta"]
    assert set(ds.checksums) == set(files) and sorted(ds.mismatched) == sorted(files)
    assert not ds.official and ds.unverified == []
    warned = " ".join(str(w.message) for w in caught)
    assert all(f in warned for f in files)


def test_cifar10_plane_order(tmp_path):
    """A pure red image must come out with only channel 0 set."""
    fake = write_cifar10(tmp_path, n_train_per_class=1, n_test_per_class=1)
    path = fake.path / "test_batch"
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    batch[b"data"][0] = 0
    batch[b"data"][0, :1024] = 255  # first 1024 values: the red plane
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)
    ds = load_quietly("cifar10", tmp_path)
    img = ds.x_test[0]
    assert (img[0] == 255).all() and (img[1:] == 0).all()


def test_cifar100_uses_fine_labels(tmp_path):
    fake = write_cifar100(tmp_path, n_train_per_class=2, n_test_per_class=1)
    ds = load_quietly("cifar100", tmp_path)
    check_common(ds, "cifar100", (3, 32, 32))
    assert ds.n_classes == 100 and ds.class_names == fake.class_names
    assert np.array_equal(ds.y_train.numpy(), fake.y_train)
    assert np.array_equal(ds.x_test.numpy(), fake.x_test)
    assert int(ds.y_train.max()) == 99  # coarse labels stop at 19
    assert set(ds.mismatched) == {f"cifar-100-python/{f}" for f in ("train", "test", "meta")}


@pytest.mark.parametrize("name,fname", [("cifar10", "data_batch_3"), ("cifar10", "batches.meta"),
                                        ("cifar100", "test")])
def test_cifar_truncated_pickle_names_file(tmp_path, name, fname):
    fake = (write_cifar10 if name == "cifar10" else write_cifar100)(tmp_path, n_train_per_class=1,
                                                                     n_test_per_class=1)
    path = fake.path / fname
    truncate(path, 0.6)
    with pytest.raises(DataError) as err:
        load_quietly(name, tmp_path)
    assert str(path) in str(err.value)


def test_cifar_malformed_batch_names_file(tmp_path):
    fake = write_cifar10(tmp_path, n_train_per_class=1, n_test_per_class=1)
    path = fake.path / "data_batch_2"
    with open(path, "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(DataError, match="3072") as err:
        load_quietly("cifar10", tmp_path)
    assert str(path) in str(err.value)


class _RunsCode:
    """Unpickling this calls os.system: a pickle that would run code."""

    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_cifar_pickle_that_would_run_code_is_refused(tmp_path):
    fake = write_cifar10(tmp_path, n_train_per_class=1, n_test_per_class=1)
    path = fake.path / "test_batch"
    with open(path, "wb") as f:
        pickle.dump({b"data": _RunsCode(), b"labels": [0]}, f)
    with pytest.raises(DataError, match="refusing to load") as err:
        load_quietly("cifar10", tmp_path)
    assert str(path) in str(err.value)
    assert not (Path.cwd() / "pwned").exists()


# ---------------------------------------------------------------- Omniglot

def test_omniglot_tasks_classes_and_split(tmp_path):
    # Names chosen so that sorting all 5 together would interleave the two folders.
    fake = write_omniglot(tmp_path, chars_per_alphabet=3, background_names=["Mu", "Alpha", "Kappa"],
                          evaluation_names=["Zeta", "Beta"])
    ds = load_quietly("omniglot", tmp_path)
    check_common(ds, "omniglot", (1, 28, 28))
    assert ds.task_names == ["Alpha", "Kappa", "Mu", "Beta", "Zeta"] == fake.task_names
    assert ds.task_of_class == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4] == fake.task_of_class
    assert ds.class_names[:2] == ["Alpha/character01", "Alpha/character02"]
    assert ds.class_names == fake.class_names
    assert np.array_equal(ds.y_train.numpy(), fake.y_train)
    assert np.array_equal(ds.y_test.numpy(), fake.y_test)
    assert np.bincount(ds.y_train.numpy()).tolist() == [15] * 15
    assert np.bincount(ds.y_test.numpy()).tolist() == [5] * 15


def test_omniglot_images_inverted_and_resized(tmp_path):
    fake = write_omniglot(tmp_path, n_alphabets_background=1, n_alphabets_evaluation=1,
                          chars_per_alphabet=1)
    folder = fake.path / "images_background" / fake.task_names[0] / "character01"
    strokes = np.zeros((105, 105), bool)
    strokes[:, :52] = True  # left half black strokes, right half white paper
    omniglot_png(folder / "0001_01.png", strokes)
    ds = load_quietly("omniglot", tmp_path)
    img = ds.x_train[0, 0]
    assert (img[:, :13] == 255).all() and (img[:, 15:] == 0).all()


def test_omniglot_split_is_by_drawer(tmp_path):
    fake = write_omniglot(tmp_path, n_alphabets_background=2, n_alphabets_evaluation=1,
                          chars_per_alphabet=2)
    folder = fake.path / "images_background" / fake.task_names[1] / "character02"
    label = fake.class_names.index(f"{fake.task_names[1]}/character02")
    blank = np.zeros((105, 105), bool)
    for png in folder.glob("*.png"):
        drawer = int(png.stem.split("_")[1])
        if drawer >= 16:
            omniglot_png(png, blank)  # test drawings of this character are blank paper
    (folder / next(p.name for p in folder.glob("*_03.png"))).unlink()  # a missing train drawing
    ds = load_quietly("omniglot", tmp_path)
    train_imgs = ds.x_train[ds.y_train == label]
    test_imgs = ds.x_test[ds.y_test == label]
    assert len(train_imgs) == 14 and len(test_imgs) == 5
    assert (test_imgs == 0).all() and (train_imgs.flatten(1).amax(1) > 0).all()


def test_omniglot_checksums_are_checked_and_track_content(tmp_path):
    fake = write_omniglot(tmp_path, n_alphabets_background=1, n_alphabets_evaluation=1,
                          chars_per_alphabet=1)
    with pytest.warns(UserWarning, match="differs from the official"):  # generated, not the release
        ds = load_dataset("omniglot", tmp_path, download=False)
    keys = ["omniglot-py/images_background", "omniglot-py/images_evaluation"]
    assert list(ds.checksums) == keys and ds.unverified == []
    assert ds.mismatched == keys and not ds.official
    png = sorted((fake.path / "images_evaluation").rglob("*.png"))[0]
    omniglot_png(png, np.zeros((105, 105), bool))
    again = load_quietly("omniglot", tmp_path)
    assert again.checksums[keys[0]] == ds.checksums[keys[0]]
    assert again.checksums[keys[1]] != ds.checksums[keys[1]]


def test_omniglot_cache_reused_invalidated_and_repaired(tmp_path, cache_dir, monkeypatch):
    fake = write_omniglot(tmp_path, n_alphabets_background=1, n_alphabets_evaluation=1,
                          chars_per_alphabet=2)
    first = load_quietly("omniglot", tmp_path)
    (cache_file,) = cache_dir.glob("*.pt")

    real_decode = D._decode_omniglot
    calls = []
    def counting_decode(data, path):
        calls.append(path)
        return real_decode(data, path)

    monkeypatch.setattr(D, "_decode_omniglot", counting_decode)
    warm = load_quietly("omniglot", tmp_path)
    assert calls == []
    assert torch.equal(warm.x_train, first.x_train) and torch.equal(warm.x_test, first.x_test)

    cache_file.write_bytes(b"garbage")  # a corrupt cache is ignored and rewritten
    repaired = load_quietly("omniglot", tmp_path)
    assert len(calls) == len(fake.files) and torch.equal(repaired.x_train, first.x_train)
    calls.clear()
    load_quietly("omniglot", tmp_path)
    assert calls == []

    png = sorted((fake.path / "images_background").rglob("*_02.png"))[0]
    omniglot_png(png, np.zeros((105, 105), bool))  # changed data: new key, decoded again
    changed = load_quietly("omniglot", tmp_path)
    assert len(calls) == len(fake.files) and not torch.equal(changed.x_train, first.x_train)
    assert len(list(cache_dir.glob("*.pt"))) == 2 and not list(cache_dir.glob("*.tmp"))


def test_omniglot_bad_file_name_and_bad_png(tmp_path):
    fake = write_omniglot(tmp_path, n_alphabets_background=1, n_alphabets_evaluation=1,
                          chars_per_alphabet=1)
    folder = fake.path / "images_evaluation" / fake.task_names[1] / "character01"
    bad = folder / "drawing.png"
    bad.write_bytes(b"")
    with pytest.raises(DataError, match="drawer") as err:
        load_quietly("omniglot", tmp_path)
    assert str(bad) in str(err.value)
    bad.unlink()
    png = sorted(folder.glob("*.png"))[0]
    truncate(png, 0.5)
    with pytest.raises(DataError, match="PNG") as err:
        load_quietly("omniglot", tmp_path)
    assert str(png) in str(err.value)


# ---------------------------------------------------------------- missing data and downloads

EXPECTED = {
    "mnist": ["MNIST/raw/train-images-idx3-ubyte", "MNIST/raw/t10k-labels-idx1-ubyte"],
    "cifar10": ["cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/test_batch",
                "cifar-10-batches-py/batches.meta"],
    "cifar100": ["cifar-100-python/train", "cifar-100-python/test", "cifar-100-python/meta"],
    "omniglot": ["omniglot-py/images_background", "omniglot-py/images_evaluation"],
}


@pytest.mark.parametrize("name", DATASETS)
def test_missing_files_name_expected_paths(tmp_path, name):
    with pytest.raises(DataError) as err:
        load_dataset(name, tmp_path, download=False)
    msg = str(err.value)
    for rel in EXPECTED[name]:
        assert str(tmp_path / rel) in msg
    assert "BENCH_DATA_ROOT" in msg and "--data-root" in msg


def test_one_missing_file_is_named(tmp_path):
    write_cifar10(tmp_path, n_train_per_class=1, n_test_per_class=1)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", tmp_path, download=False)
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_4") in str(err.value)
    assert "data_batch_3" not in str(err.value)


def test_nonexistent_root(tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(DataError, match="does not exist") as err:
        load_dataset("mnist", root, download=False)
    assert str(root / "MNIST/raw/train-images-idx3-ubyte") in str(err.value)
    assert not root.exists()


def test_failed_download_leaves_nothing_behind(tmp_path, monkeypatch):
    root = tmp_path / "new-root"
    timeout_before = socket.getdefaulttimeout()
    seen = {}

    def offline(dest):
        seen["timeout"] = socket.getdefaulttimeout()
        Path(dest, "MNIST", "raw").mkdir(parents=True)
        Path(dest, "MNIST", "raw", "train-images-idx3-ubyte.gz").write_bytes(b"partial")
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: "
                           "Name or service not known")

    monkeypatch.setitem(D._FETCHERS, "mnist", (offline, "MNIST"))
    with pytest.raises(DataError, match="download failed") as err:
        load_dataset("mnist", root, download=True)
    msg = str(err.value)
    assert str(root / "MNIST/raw/train-images-idx3-ubyte") in msg and "BENCH_DATA_ROOT" in msg
    assert seen["timeout"] == D.DOWNLOAD_TIMEOUT_S and socket.getdefaulttimeout() == timeout_before
    assert not root.exists()  # created for the download, removed again when it failed

    root.mkdir()
    with pytest.raises(DataError):
        load_dataset("mnist", root, download=True)
    assert list(root.iterdir()) == []  # no half-written files, no temporary folder


def test_download_fills_only_missing_files(tmp_path, monkeypatch):
    root = tmp_path / "root"
    kept = write_cifar10(root, n_train_per_class=1, n_test_per_class=1, seed=1)
    (kept.path / "test_batch").unlink()
    meta_before = (kept.path / "batches.meta").read_bytes()

    def fake_download(dest):
        write_cifar10(dest, n_train_per_class=1, n_test_per_class=1, seed=2)
        Path(dest, "cifar-10-python.tar.gz").write_bytes(b"archive")

    monkeypatch.setitem(D._FETCHERS, "cifar10", (fake_download, "cifar-10-batches-py"))
    ds = load_quietly_download("cifar10", root)
    assert (kept.path / "batches.meta").read_bytes() == meta_before
    assert np.array_equal(ds.x_train.numpy(), kept.x_train)  # present files were not replaced
    assert (kept.path / "test_batch").is_file()
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py"]


def load_quietly_download(name: str, root: Path) -> ArrayDataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_dataset(name, root, download=True)


def test_make_data_root_holds_every_dataset(tmp_path):
    root = make_data_root(tmp_path, mnist={"n_train_per_class": 2},
                          cifar100={"n_test_per_class": 2})
    sizes = {name: len(load_quietly(name, root).y_train) for name in DATASETS}
    assert sizes == {"mnist": 20, "cifar10": 50, "cifar100": 200, "omniglot": 150}
    assert len(load_quietly("cifar100", root).y_test) == 200


# ---------------------------------------------------------------- the real copy, where present

@pytest.mark.skipif(not (REAL_ROOT / "MNIST" / "raw").is_dir(), reason="no real MNIST copy here")
def test_real_mnist_is_official():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = load_dataset("mnist", REAL_ROOT, download=False)
    assert ds.official and ds.mismatched == [] and len(ds.checksums) == 4
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert np.bincount(ds.y_test.numpy()).tolist()[:3] == [980, 1135, 1032]
