"""Load the benchmark datasets from their official on-disk layouts.

Every dataset comes back as an `ArrayDataset`: uint8 images `[N, C, H, W]` and
int64 labels, train and test, all in memory, plus the md5 of every file read.

Layouts expected under the data root (the ones torchvision downloads):

    MNIST/raw/train-images-idx3-ubyte   train-labels-idx1-ubyte
              t10k-images-idx3-ubyte    t10k-labels-idx1-ubyte
              (each may instead be the official `.gz`; the plain file wins)
    cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch, batches.meta
    cifar-100-python/train, test, meta                  (fine labels are used)
    omniglot-py/images_background/<Alphabet>/characterNN/<imageid>_<drawer>.png
    omniglot-py/images_evaluation/<Alphabet>/characterNN/<imageid>_<drawer>.png

The CIFAR files are Python pickles, the official distribution format. They are
read with an unpickler that builds only plain containers and numpy arrays, so a
tampered file cannot run code.

Checksums. The md5 of every file read is recorded in `checksums` (keyed by the
path relative to the data root) and compared with the official md5 listed by
torchvision (for the uncompressed MNIST files, the md5s of the official files
once gunzipped). A file that differs is not refused: a warning names it and it
is listed in `mismatched`, so results on it can be flagged as unofficial.
The extracted Omniglot PNGs have no md5 published with them: each of the two top
folders gets one md5 over its PNGs (for each file, in sorted order of its path
relative to the folder: the path, a NUL byte, the file size in decimal, a NUL
byte, the bytes), recorded under `omniglot-py/images_background` and
`omniglot-py/images_evaluation` and compared with the md5 of the official release
(bench/omniglot_official.py, which also holds each alphabet's md5 and number of
characters).

Omniglot's layout. Data that claim to be the official release (any alphabet
folder holding exactly its official files) must have its layout: 30 + 20
alphabets, 964 + 659 characters, the official characters per alphabet, 20
drawings per character. An incomplete copy raises DataError naming what differs,
rather than train a 49-task benchmark as if it were the 50-task one. Data none of
whose alphabets match (generated data, another collection in this layout) load,
flagged as unofficial by their folder md5s.

Omniglot. One task per alphabet: the 30 background alphabets sorted by name,
then the 20 evaluation alphabets sorted by name (50 tasks). One class per
character; global class ids follow the same order, alphabet by alphabet, the
characters of an alphabet sorted by folder name. `task_of_class[c]` is the
task of class c. Each 105x105 1-bit image is converted to 'L', resized to 28x28
with PIL's bilinear filter (antialiased when shrinking) and inverted, so that
strokes are bright on a 0 background. Train/test split by drawer, the number
after the underscore in the file name: drawers 01-15 are train, drawers 16-20
(and any higher number) are test, i.e. 15 train and 5 test images of every
character of the official release. The rule is applied file by file, so a
character folder with missing drawings simply has fewer images (in data that are not
the official release: see the layout check above).
Decoding the ~32k PNGs takes seconds, so the decoded images are cached in
`$BENCH_CACHE_DIR` (default `~/.cache/clbench`) under a key made of both folder
md5s; the files are still read and hashed on every load.

Missing files are downloaded with torchvision when `download=True` (into a
temporary folder first, so a failed download leaves nothing half-written);
files that are present are never replaced.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import re
import shutil
import socket
import struct
import tempfile
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

# The official Omniglot release: per alphabet its number of characters and the md5 of its PNGs.
from bench.omniglot_official import ALPHABETS as _OMNIGLOT_OFFICIAL
from bench.omniglot_official import FOLDER_MD5 as _OMNIGLOT_MD5

DATASETS: tuple[str, ...] = ("mnist", "cifar10", "cifar100", "omniglot")

DOWNLOAD_TIMEOUT_S = 15  # per socket operation; an offline machine should fail fast
OMNIGLOT_SIZE = 28
OMNIGLOT_TRAIN_DRAWERS = range(1, 16)  # drawers 01-15; every other drawer is test
_OMNIGLOT_TOPS = ("images_background", "images_evaluation")
OMNIGLOT_DRAWINGS = 20  # drawings of every character in the official release (drawers 01-20)
# Bump when the decoding or the split changes, so old cache files are not reused.
_OMNIGLOT_CACHE_VERSION = 1

_HINT = ("Pass download=True on a machine with internet access, or point --data-root "
         "(or the BENCH_DATA_ROOT environment variable) at a folder that has them.")


class DataError(Exception):
    """Missing, unreadable, truncated or malformed data.

    The message names the file(s) or paths expected.
    """


@dataclass
class ArrayDataset:
    name: str
    x_train: torch.Tensor  # uint8, shape [N, C, H, W]
    y_train: torch.Tensor  # int64, shape [N], global class ids 0..n_classes-1
    x_test: torch.Tensor
    y_test: torch.Tensor
    class_names: list[str]
    checksums: dict[str, str]  # md5 of every file read, keyed by path relative to the data root
    mismatched: list[str]  # files whose md5 differs from the official one
    unverified: list[str]  # files read for which no official md5 exists
    task_of_class: list[int] | None = None  # Omniglot only: alphabet index of each class
    task_names: list[str] | None = None  # Omniglot only: alphabet names, in task order

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def official(self) -> bool:
        """True when every file with an official md5 matched it."""
        return not self.mismatched


# ---------------------------------------------------------------- official md5s

# Official md5s, as torchvision.datasets lists them (tests check that they agree);
# copied so that importing this module does not import torchvision (seconds).
_MNIST_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_MNIST_MD5 = {
    # torchvision lists only the .gz files; these are the official files gunzipped.
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    # torchvision.datasets.MNIST.resources
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}


@dataclass(frozen=True)
class _CifarFormat:
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    label_key: str  # key of the labels in a batch
    names_key: str  # key of the class names in the meta file
    md5: dict[str, str]


_CIFAR = {
    "cifar10": _CifarFormat(  # torchvision.datasets.CIFAR10.train_list, test_list, meta
        folder="cifar-10-batches-py",
        train=("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"),
        test=("test_batch",), meta="batches.meta", label_key="labels", names_key="label_names",
        md5={"data_batch_1": "c99cafc152244af753f735de768cd75f",
             "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
             "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
             "data_batch_4": "634d18415352ddfa80567beed471001a",
             "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
             "test_batch": "40351d587109b95175f43aff81a1287e",
             "batches.meta": "5ff9c542aee3614f3951f8cda6e48888"}),
    "cifar100": _CifarFormat(  # torchvision.datasets.CIFAR100.train_list, test_list, meta
        folder="cifar-100-python", train=("train",), test=("test",), meta="meta",
        label_key="fine_labels", names_key="fine_label_names",
        md5={"train": "16019d7e3df5f24257cddd939b257f8d",
             "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
             "meta": "7973b15100ade9c7d40fb424638fde48"}),
}


# ---------------------------------------------------------------- public entry point

def load_dataset(name: str, root: str | os.PathLike, download: bool = True) -> ArrayDataset:
    """Load dataset `name` from the data root `root`, downloading missing files if allowed.

    Raises ValueError for an unknown name and DataError for missing, unreadable,
    truncated or malformed files.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise DataError(f"data root {root} is a file, not a folder: point --data-root (or the BENCH_DATA_ROOT "
                        "environment variable) at the folder that holds the datasets")
    _ensure_present(name, root, download)
    ledger = _Ledger(root)
    if name == "mnist":
        return _load_mnist(root, ledger)
    if name == "omniglot":
        return _load_omniglot(root, ledger)
    return _load_cifar(name, root, ledger)


class _Ledger:
    """Reads files, recording their md5 and whether it matches the official one."""

    def __init__(self, root: Path):
        self.root = root
        self.checksums: dict[str, str] = {}
        self.mismatched: list[str] = []
        self.unverified: list[str] = []

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def read(self, path: Path, official_md5: str | None) -> bytes:
        data = _read_bytes(path)
        self.record(self.rel(path), hashlib.md5(data).hexdigest(), official_md5)
        return data

    def record(self, rel: str, md5: str, official_md5: str | None) -> None:
        self.checksums[rel] = md5
        if official_md5 is None:
            self.unverified.append(rel)
        elif md5 != official_md5:
            self.mismatched.append(rel)
            warnings.warn(f"{self.root / rel}: md5 {md5} differs from the official {official_md5}; "
                          "results on this data are flagged as unofficial")

    def dataset(self, name: str, x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor,
                y_test: torch.Tensor, class_names: list[str], **extra: Any) -> ArrayDataset:
        return ArrayDataset(name, x_train, y_train, x_test, y_test, class_names,
                            dict(self.checksums), list(self.mismatched), list(self.unverified),
                            **extra)


def _read_bytes(path: str | Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from e


# ---------------------------------------------------------------- presence and download

def _expected_paths(name: str) -> list[str]:
    """Paths, relative to the data root, that `name` needs."""
    if name == "mnist":
        return [f"MNIST/raw/{stem}" for stem in _MNIST_STEMS]
    if name == "omniglot":
        return [f"omniglot-py/{top}" for top in _OMNIGLOT_TOPS]
    fmt = _CIFAR[name]
    return [f"{fmt.folder}/{f}" for f in (*fmt.train, *fmt.test, fmt.meta)]


def _is_present(root: Path, rel: str) -> bool:
    if rel.startswith("omniglot-py/"):
        return (root / rel).is_dir()
    if rel.startswith("MNIST/"):
        return (root / rel).is_file() or (root / (rel + ".gz")).is_file()
    return (root / rel).is_file()


def _missing(name: str, root: Path) -> list[str]:
    return [rel for rel in _expected_paths(name) if not _is_present(root, rel)]


def _describe_missing(name: str, root: Path, missing: list[str]) -> str:
    gz = " (each may instead be the official .gz)" if name == "mnist" else ""
    paths = "\n  ".join(str(root / rel) for rel in missing)
    return f"Expected{gz}:\n  {paths}\n"


def _ensure_present(name: str, root: Path, download: bool) -> None:
    missing = _missing(name, root)
    if not missing:
        return
    if not download:
        if not root.is_dir():
            raise DataError(f"data root {root} does not exist. "
                            + _describe_missing(name, root, missing) + _HINT)
        raise DataError(f"{name}: files missing under {root}. "
                        + _describe_missing(name, root, missing) + _HINT)
    try:
        _download(name, root)
    except Exception as e:  # torchvision raises RuntimeError, URLError, OSError, timeouts...
        raise DataError(f"{name}: files missing under {root} and the download failed "
                        f"({type(e).__name__}: {e}). " + _describe_missing(name, root, missing)
                        + "Point --data-root (or the BENCH_DATA_ROOT environment variable) "
                        "at a folder that has them.") from e
    still = _missing(name, root)
    if still:
        raise DataError(f"{name}: still missing after the download. "
                        + _describe_missing(name, root, still) + _HINT)


def _torchvision_datasets():
    import torchvision.datasets  # on demand: importing it takes seconds
    return torchvision.datasets


def _fetch_mnist(dest: str) -> None:
    _torchvision_datasets().MNIST(dest, download=True)


def _fetch_cifar10(dest: str) -> None:
    _torchvision_datasets().CIFAR10(dest, download=True)


def _fetch_cifar100(dest: str) -> None:
    _torchvision_datasets().CIFAR100(dest, download=True)


def _fetch_omniglot(dest: str) -> None:
    _torchvision_datasets().Omniglot(dest, background=True, download=True)
    _torchvision_datasets().Omniglot(dest, background=False, download=True)


# name -> (torchvision downloader writing under a root, the folder it fills)
_FETCHERS: dict[str, tuple[Callable[[str], None], str]] = {
    "mnist": (_fetch_mnist, "MNIST"),
    "cifar10": (_fetch_cifar10, _CIFAR["cifar10"].folder),
    "cifar100": (_fetch_cifar100, _CIFAR["cifar100"].folder),
    "omniglot": (_fetch_omniglot, "omniglot-py"),
}


def _download(name: str, root: Path) -> None:
    fetch, folder = _FETCHERS[name]
    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    # Downloading next to the data keeps os.replace on one file system.
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=root))
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        fetch(str(tmp))
        _move_missing(tmp / folder, root / folder)
    finally:
        socket.setdefaulttimeout(old_timeout)
        shutil.rmtree(tmp, ignore_errors=True)
        if created and not any(root.iterdir()):
            root.rmdir()


def _move_missing(src: Path, dst: Path) -> None:
    """Move what `dst` lacks from `src`; what `dst` already has is left alone."""
    if not src.exists():
        return
    if not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
    elif src.is_dir() and dst.is_dir():
        for child in src.iterdir():
            _move_missing(child, dst / child.name)


# ---------------------------------------------------------------- MNIST (idx files)

def _load_mnist(root: Path, ledger: _Ledger) -> ArrayDataset:
    raw = root / "MNIST" / "raw"
    arrays = {}
    for stem in _MNIST_STEMS:
        path = raw / stem if (raw / stem).is_file() else raw / (stem + ".gz")
        data = ledger.read(path, _MNIST_MD5.get(path.name))
        if path.suffix == ".gz":
            data = _gunzip(data, path)
        arrays[stem] = (_parse_idx(data, path, ndim=3 if "images" in stem else 1), path)
    x_train, y_train = _mnist_split(arrays["train-images-idx3-ubyte"],
                                    arrays["train-labels-idx1-ubyte"])
    x_test, y_test = _mnist_split(arrays["t10k-images-idx3-ubyte"],
                                  arrays["t10k-labels-idx1-ubyte"])
    return ledger.dataset("mnist", x_train, y_train, x_test, y_test, [str(d) for d in range(10)])


def _gunzip(data: bytes, path: Path) -> bytes:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: corrupt or truncated gzip file ({e})") from e


def _parse_idx(data: bytes, path: Path, ndim: int) -> np.ndarray:
    """Parse an unsigned-byte idx file: magic 00 00 08 <ndim>, ndim big-endian int32 sizes, data."""
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        magic = data[:4].hex() or "missing"
        raise DataError(f"{path}: not an unsigned-byte idx file (magic {magic})")
    if data[3] != ndim:
        raise DataError(f"{path}: idx file has {data[3]} dimensions, expected {ndim}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated idx file (header incomplete)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "trailing bytes after the data in"
        raise DataError(f"{path}: {what} idx file: {len(data)} bytes, "
                        f"header {dims} implies {expected}")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def _mnist_split(images: tuple[np.ndarray, Path], labels: tuple[np.ndarray, Path]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    (x, x_path), (y, y_path) = images, labels
    if len(x) != len(y):
        raise DataError(f"{x_path} has {len(x)} images but {y_path} has {len(y)} labels")
    if len(y) and y.max() > 9:
        raise DataError(f"{y_path}: label {int(y.max())} is not a digit")
    # .copy(): frombuffer arrays are read-only views of the file bytes.
    return torch.from_numpy(x[:, None].copy()), torch.from_numpy(y.astype(np.int64))


# ---------------------------------------------------------------- CIFAR (pickles)

def _load_cifar(name: str, root: Path, ledger: _Ledger) -> ArrayDataset:
    fmt = _CIFAR[name]
    folder = root / fmt.folder
    meta_path = folder / fmt.meta
    meta = _unpickle(ledger.read(meta_path, fmt.md5[fmt.meta]), meta_path)
    class_names = [_text(n) for n in _field(meta, fmt.names_key, meta_path)]

    def batches(files: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for f in files:
            path = folder / f
            batch = _unpickle(ledger.read(path, fmt.md5[f]), path)
            x, y = _cifar_batch(batch, path, fmt.label_key, len(class_names))
            xs.append(x)
            ys.append(y)
        return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))

    x_train, y_train = batches(fmt.train)
    x_test, y_test = batches(fmt.test)
    return ledger.dataset(name, x_train, y_train, x_test, y_test, class_names)


class _ArrayUnpickler(pickle.Unpickler):
    """Refuses every global but what numpy arrays need: a pickle cannot run code through it."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
               ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _unpickle(data: bytes, path: Path) -> dict:
    try:
        # encoding="bytes": the official files are Python 2 pickles.
        obj = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # truncation surfaces as EOFError, UnpicklingError, ValueError...
        raise DataError(f"{path}: unreadable pickle, truncated or corrupt "
                        f"({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict, found {type(obj).__name__}")
    return obj


def _field(d: dict, key: str, path: Path) -> Any:
    # Official (Python 2) pickles have bytes keys; files re-written by Python 3 have str keys.
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise DataError(f"{path}: no {key!r} entry (found {sorted(map(_text, d))})")


def _text(s: Any) -> str:
    return s.decode("utf-8") if isinstance(s, bytes) else str(s)


def _cifar_batch(batch: dict, path: Path, label_key: str, n_classes: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    x = _field(batch, "data", path)
    if not (isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim == 2
            and x.shape[1] == 3 * 32 * 32):
        shape = getattr(x, "shape", type(x).__name__)
        raise DataError(f"{path}: 'data' must be a uint8 array of N x 3072, found {shape}")
    try:
        y = np.asarray(_field(batch, label_key, path), dtype=np.int64)
    except (TypeError, ValueError) as e:
        raise DataError(f"{path}: {label_key!r} is not a list of integers") from e
    if y.shape != (len(x),):
        raise DataError(f"{path}: {len(x)} images but {label_key!r} has shape {y.shape}")
    if len(y) and (y.min() < 0 or y.max() >= n_classes):
        raise DataError(f"{path}: labels outside 0..{n_classes - 1}")
    # Each row holds the R plane, then G, then B, each 32x32 row-major.
    return x.reshape(-1, 3, 32, 32), y


# ---------------------------------------------------------------- Omniglot (PNG folders)

_DRAWING = re.compile(r"^(\d+)_(\d+)\.png$")


@dataclass
class _Drawing:
    rel: str  # relative to the data root
    data: bytes
    label: int
    train: bool


def _load_omniglot(root: Path, ledger: _Ledger) -> ArrayDataset:
    class_names: list[str] = []
    task_of_class: list[int] = []
    task_names: list[str] = []
    drawings: list[_Drawing] = []
    layout: dict[str, dict[str, _Alphabet]] = {}
    for top in _OMNIGLOT_TOPS:
        folder = root / "omniglot-py" / top
        top_rel = ledger.rel(folder)
        files: dict[str, bytes] = {}  # keyed relative to `folder`, for its checksum
        layout[top] = {}
        # Plain strings rather than Path objects here: pathlib costs seconds over 32k files.
        for alphabet in _subdirs(str(folder)):
            characters = _subdirs(os.path.join(folder, alphabet))
            if not characters:
                raise DataError(f"{folder / alphabet}: no character folders")
            own: dict[str, bytes] = {}  # this alphabet's files, keyed relative to its folder
            drawn: dict[str, int] = {}
            for character in characters:
                label = len(class_names)
                class_names.append(f"{alphabet}/{character}")
                task_of_class.append(len(task_names))
                char_dir = os.path.join(folder, alphabet, character)
                names = _pngs(char_dir)
                drawn[character] = len(names)
                for fname in names:
                    data = _read_bytes(os.path.join(char_dir, fname))
                    rel = f"{alphabet}/{character}/{fname}"
                    files[rel] = data
                    own[f"{character}/{fname}"] = data
                    train = _is_train_drawer(fname, char_dir)
                    drawings.append(_Drawing(f"{top_rel}/{rel}", data, label, train))
            layout[top][alphabet] = _Alphabet(drawn, _folder_md5(own))
            task_names.append(alphabet)
        if not files:
            raise DataError(f"{folder}: no <Alphabet>/<character>/<imageid>_<drawer>.png images")
        ledger.record(top_rel, _folder_md5(files), _OMNIGLOT_MD5[top])
    _check_omniglot_layout(layout, root / "omniglot-py")

    # Keyed by content, so a change of data (or of the decoding) never reuses stale images.
    key = hashlib.md5("|".join([f"v{_OMNIGLOT_CACHE_VERSION}", str(OMNIGLOT_SIZE)] + [
        ledger.checksums[f"omniglot-py/{top}"] for top in _OMNIGLOT_TOPS]).encode()).hexdigest()
    train = [d for d in drawings if d.train]
    test = [d for d in drawings if not d.train]
    x_train, x_test = _omniglot_images(key, train, test, root)

    def labels(ds: list[_Drawing]) -> torch.Tensor:
        return torch.tensor([d.label for d in ds], dtype=torch.int64)

    return ledger.dataset("omniglot", x_train, labels(train), x_test, labels(test), class_names,
                          task_of_class=task_of_class, task_names=task_names)


@dataclass
class _Alphabet:
    drawings: dict[str, int]  # character folder -> number of PNGs in it
    md5: str  # over its PNGs, framed as in `_folder_md5`, paths relative to the alphabet folder


def omniglot_layout_problems(layout: dict[str, dict[str, _Alphabet]]) -> list[str]:
    """How `layout` differs from the official release's counts ([] when it does not)."""
    problems = []
    for top in _OMNIGLOT_TOPS:
        want, have = _OMNIGLOT_OFFICIAL[top], layout.get(top, {})
        n_have = sum(len(a.drawings) for a in have.values())
        n_want = sum(n for n, _ in want.values())
        if len(have) != len(want) or n_have != n_want:
            problems.append(f"{top} has {len(have)} alphabets and {n_have} characters, "
                            f"the official release {len(want)} and {n_want}")
        missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
        if missing:
            problems.append(f"{top}: alphabet(s) missing: {', '.join(missing)}")
        if extra:
            problems.append(f"{top}: alphabet(s) not in the official release: {', '.join(extra)}")
        for name in sorted(set(want) & set(have)):
            drawings = have[name].drawings
            if len(drawings) != want[name][0]:
                problems.append(f"{top}/{name} has {len(drawings)} characters, officially {want[name][0]}")
            odd = [f"{c} ({n})" for c, n in drawings.items() if n != OMNIGLOT_DRAWINGS]
            if odd:
                shown = ", ".join(odd[:3]) + (f" and {len(odd) - 3} more" if len(odd) > 3 else "")
                problems.append(f"{top}/{name}: characters without the official {OMNIGLOT_DRAWINGS} "
                                f"drawings: {shown}")
    return problems


def _check_omniglot_layout(layout: dict[str, dict[str, _Alphabet]], folder: Path) -> None:
    """Refuse an incomplete copy of the official release; DataError naming what differs.

    Data claim to be the official release when any alphabet folder holds exactly its official
    files; such data must then have the official layout (a missing alphabet would silently make
    49 tasks of a 50-task benchmark). Data none of whose alphabets match (generated data, another
    collection in the same layout) are not the official release: they are loaded and, their
    folder md5s differing, flagged as unofficial like any other mismatched file.
    """
    matching = [f"{top}/{name}" for top, alphabets in layout.items() for name, a in alphabets.items()
                if _OMNIGLOT_OFFICIAL[top].get(name, (0, None))[1] == a.md5]
    if not matching:
        return
    problems = omniglot_layout_problems(layout)
    if problems:
        shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8 else "")
        raise DataError(f"{folder}: an incomplete copy of the official Omniglot ({len(matching)} of its "
                        f"{sum(map(len, _OMNIGLOT_OFFICIAL.values()))} alphabet folders hold the official "
                        f"files, but {shown}). Restore the missing files, or move {folder} away and "
                        "download it again.")


def _subdirs(folder: str) -> list[str]:
    """Sorted names of the sub-folders, skipping hidden ones (such as .ipynb_checkpoints)."""
    try:
        with os.scandir(folder) as it:
            return sorted(e.name for e in it if not e.name.startswith(".") and e.is_dir())
    except OSError as e:
        raise DataError(f"cannot list {folder}: {e}") from e


def _pngs(folder: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(folder) if n.endswith(".png"))
    except OSError as e:
        raise DataError(f"cannot list {folder}: {e}") from e


def _is_train_drawer(fname: str, folder: str) -> bool:
    m = _DRAWING.match(fname)
    if not m or int(m.group(2)) < 1:
        path = os.path.join(folder, fname)
        raise DataError(f"{path}: expected a file name <imageid>_<drawer>.png with drawer 01..20")
    return int(m.group(2)) in OMNIGLOT_TRAIN_DRAWERS


def _folder_md5(files: dict[str, bytes]) -> str:
    h = hashlib.md5()
    for rel in sorted(files):
        data = files[rel]
        # Path and size framing, so moving bytes between files changes the digest.
        h.update(rel.encode("utf-8") + b"\0" + str(len(data)).encode() + b"\0")
        h.update(data)
    return h.hexdigest()


def _omniglot_images(key: str, train: list[_Drawing], test: list[_Drawing], root: Path
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    cache = _cache_dir() / f"omniglot-{key}.pt"
    shape = (OMNIGLOT_SIZE, OMNIGLOT_SIZE)
    cached = _read_cache(cache, {"x_train": (len(train), 1, *shape),
                                 "x_test": (len(test), 1, *shape)})
    if cached is not None:
        return cached["x_train"], cached["x_test"]
    x_train = _decode_all(train, root)
    x_test = _decode_all(test, root)
    _write_cache(cache, {"x_train": x_train, "x_test": x_test})
    return x_train, x_test


def _decode_all(drawings: list[_Drawing], root: Path) -> torch.Tensor:
    out = np.empty((len(drawings), 1, OMNIGLOT_SIZE, OMNIGLOT_SIZE), np.uint8)
    for i, d in enumerate(drawings):
        out[i, 0] = _decode_omniglot(d.data, root / d.rel)
    return torch.from_numpy(out)


def _decode_omniglot(data: bytes, path: Path) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as im:
            small = im.convert("L").resize((OMNIGLOT_SIZE, OMNIGLOT_SIZE),
                                           Image.Resampling.BILINEAR)
    except Exception as e:  # PIL reports bad files as OSError, SyntaxError, ValueError...
        raise DataError(f"{path}: unreadable PNG ({type(e).__name__}: {e})") from e
    return 255 - np.asarray(small, dtype=np.uint8)  # strokes bright on a 0 background


# ---------------------------------------------------------------- decoded-image cache

def _cache_dir() -> Path:
    default = Path.home() / ".cache" / "clbench"
    return Path(os.environ.get("BENCH_CACHE_DIR") or default).expanduser()


def _read_cache(path: Path, shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor] | None:
    """The cached tensors, or None when absent, unreadable or not the expected shapes."""
    if not path.is_file():
        return None
    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except Exception:  # a corrupt cache is rebuilt, never fatal
        return None
    if not isinstance(obj, dict):
        return None
    for k, shape in shapes.items():
        t = obj.get(k)
        if not isinstance(t, torch.Tensor) or t.dtype != torch.uint8 or tuple(t.shape) != shape:
            return None
    return obj


def _write_cache(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        os.close(fd)
        torch.save(tensors, tmp)
        os.replace(tmp, path)  # readers never see a half-written file
    except OSError as e:
        warnings.warn(f"could not write the cache {path}: {e}; "
                      "the images will be decoded again next time")
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
