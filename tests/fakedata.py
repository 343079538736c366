"""Tiny datasets written in the official on-disk layouts, for tests.

Each `write_*` function writes one dataset under a data root exactly where
`bench.datasets.load_dataset` (and torchvision) look for it, and returns a
`Fake` describing what it wrote, in the order the loader returns it. Images
carry class-dependent signal (a fixed random pattern per class plus noise), so
a small model can learn something from them. The files are not the official
ones, so their md5s never match: loading them flags every file as mismatched
(or unverified, for Omniglot).

    root = make_data_root(tmp_path, datasets=("mnist", "omniglot"))
    ds = load_dataset("mnist", root, download=False)
"""
from __future__ import annotations

import gzip
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@dataclass
class Fake:
    """What a writer wrote, in the loader's order (x is None where decoding changes pixels)."""

    path: Path  # the dataset folder, e.g. root/MNIST
    files: list[Path]  # every file written
    class_names: list[str]
    y_train: np.ndarray  # int64
    y_test: np.ndarray
    x_train: np.ndarray | None = None  # uint8 [N, C, H, W]
    x_test: np.ndarray | None = None
    task_names: list[str] | None = None  # Omniglot only
    task_of_class: list[int] | None = None  # Omniglot only


def class_images(rng: np.random.Generator, prototypes: np.ndarray, labels: np.ndarray,
                 noise: float = 0.3) -> np.ndarray:
    """uint8 images: the prototype of each label, blended with uniform noise."""
    shape = (len(labels), *prototypes.shape[1:])
    mix = (1 - noise) * prototypes[labels] + noise * rng.uniform(0, 255, shape)
    return np.clip(np.rint(mix), 0, 255).astype(np.uint8)


def _labels(classes: Iterable[int], per_class: int, rng: np.random.Generator) -> np.ndarray:
    y = np.repeat(np.asarray(list(classes), dtype=np.int64), per_class)
    return y[rng.permutation(len(y))]  # shuffled, like the official files


def _split(n_classes: int, shape: tuple[int, ...], classes: Iterable[int], n_train_per_class: int,
           n_test_per_class: int, seed: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    prototypes = rng.uniform(0, 255, (n_classes, *shape))
    classes = list(classes)
    y_train = _labels(classes, n_train_per_class, rng)
    y_test = _labels(classes, n_test_per_class, rng)
    return (class_images(rng, prototypes, y_train), y_train,
            class_images(rng, prototypes, y_test), y_test)


# ---------------------------------------------------------------- MNIST

def idx_bytes(array: np.ndarray) -> bytes:
    """An unsigned-byte idx file: magic 00 00 08 <ndim>, big-endian int32 sizes, then the data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_mnist(root: str | os.PathLike, n_train_per_class: int = 5, n_test_per_class: int = 2,
                classes: Iterable[int] = range(10), seed: int = 0, compress: bool = False) -> Fake:
    """MNIST/raw/ with the four idx files (`compress`: only the official .gz variants)."""
    x_train, y_train, x_test, y_test = _split(10, (1, 28, 28), classes, n_train_per_class,
                                              n_test_per_class, seed)
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    contents = [x_train[:, 0], y_train, x_test[:, 0], y_test]
    files = []
    for name, array in zip(MNIST_FILES, contents):
        data = idx_bytes(array)
        path = raw / (name + ".gz" if compress else name)
        path.write_bytes(gzip.compress(data) if compress else data)
        files.append(path)
    return Fake(raw.parent, files, [str(d) for d in range(10)], y_train, y_test, x_train, x_test)


# ---------------------------------------------------------------- CIFAR

def _pickle(path: Path, obj: dict, str_keys: bool) -> None:
    # The official files are Python 2 pickles, which load with bytes keys and
    # bytes strings; make_data_root.py (Python 3) writes str keys instead.
    def conv(v):
        if str_keys or not isinstance(v, str):
            return [conv(i) for i in v] if isinstance(v, list) else v
        return v.encode()
    obj = {(k if str_keys else k.encode()): conv(v) for k, v in obj.items()}
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _write_cifar(folder: Path, batches: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]],
                 meta_name: str, meta: dict, str_keys: bool) -> list[Path]:
    """`batches` maps a file name to (images, {label key: labels})."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for fname, (x, labels) in batches.items():
        path = folder / fname
        _pickle(path, {"batch_label": fname,
                       **{key: [int(v) for v in y] for key, y in labels.items()},
                       "data": x.reshape(len(x), -1),  # R plane, G plane, B plane per row
                       "filenames": [f"{fname}_{i:05d}.png" for i in range(len(x))]}, str_keys)
        files.append(path)
    _pickle(folder / meta_name, meta, str_keys)
    return files + [folder / meta_name]


def write_cifar10(root: str | os.PathLike, n_train_per_class: int = 5, n_test_per_class: int = 2,
                  classes: Iterable[int] = range(10), seed: int = 0,
                  str_keys: bool = False) -> Fake:
    """cifar-10-batches-py/: data_batch_1..5 (training images in order), test_batch, batches.meta.

    `str_keys`: str keys and strings, as make_data_root.py writes them, instead
    of the bytes that the official (Python 2) pickles load with.
    """
    x_train, y_train, x_test, y_test = _split(10, (3, 32, 32), classes, n_train_per_class,
                                              n_test_per_class, seed)
    parts = np.array_split(np.arange(len(y_train)), 5)
    batches = {f"data_batch_{i + 1}": (x_train[p], {"labels": y_train[p]})
               for i, p in enumerate(parts)}
    batches["test_batch"] = (x_test, {"labels": y_test})
    meta = {"label_names": list(CIFAR10_CLASSES), "num_cases_per_batch": len(parts[0]),
            "num_vis": 3072}
    folder = Path(root) / "cifar-10-batches-py"
    files = _write_cifar(folder, batches, "batches.meta", meta, str_keys)
    return Fake(folder, files, list(CIFAR10_CLASSES), y_train, y_test, x_train, x_test)


def write_cifar100(root: str | os.PathLike, n_train_per_class: int = 2, n_test_per_class: int = 1,
                   classes: Iterable[int] = range(100), seed: int = 0,
                   str_keys: bool = False) -> Fake:
    """cifar-100-python/ with train, test (fine and coarse labels) and meta."""
    x_train, y_train, x_test, y_test = _split(100, (3, 32, 32), classes, n_train_per_class,
                                              n_test_per_class, seed)
    fine = [f"fine_class_{i:02d}" for i in range(100)]
    coarse = [f"coarse_class_{i:02d}" for i in range(20)]
    folder = Path(root) / "cifar-100-python"
    # Like the official files, batches hold coarse labels too; a loader must use the fine ones.
    batches = {"train": (x_train, {"fine_labels": y_train, "coarse_labels": y_train // 5}),
               "test": (x_test, {"fine_labels": y_test, "coarse_labels": y_test // 5})}
    meta = {"fine_label_names": fine, "coarse_label_names": coarse}
    files = _write_cifar(folder, batches, "meta", meta, str_keys)
    return Fake(folder, files, fine, y_train, y_test, x_train, x_test)


# ---------------------------------------------------------------- Omniglot

def omniglot_png(path: str | os.PathLike, strokes: np.ndarray) -> None:
    """A 1-bit PNG with black strokes (True in `strokes`) on white, as in the official images."""
    Image.fromarray(~np.asarray(strokes, dtype=bool)).save(path)  # bool arrays become mode '1'


def write_omniglot(root: str | os.PathLike, n_alphabets_background: int = 3,
                   n_alphabets_evaluation: int = 2, chars_per_alphabet: int = 2, drawers: int = 20,
                   size: int = 105, seed: int = 0, background_names: Sequence[str] | None = None,
                   evaluation_names: Sequence[str] | None = None) -> Fake:
    """omniglot-py/images_{background,evaluation}/<Alphabet>/characterNN/<imageid>_<drawer>.png.

    Each character is a coarse random stroke pattern; each drawer's image of it
    flips a few of its cells. Expected labels follow the documented rule:
    background alphabets sorted, then evaluation alphabets sorted; drawers
    1-15 train, the rest test.
    """
    bg = list(background_names
              or [f"Background_Script_{i:02d}" for i in range(n_alphabets_background)])
    ev = list(evaluation_names
              or [f"Evaluation_Script_{i:02d}" for i in range(n_alphabets_evaluation)])
    rng = np.random.default_rng(seed)
    base = Path(root) / "omniglot-py"
    cells = 7  # the pattern is drawn on a cells x cells grid, then scaled up to size x size
    scale = -(-size // cells)
    files, class_names, task_of_class, task_names = [], [], [], []
    y_train, y_test = [], []
    image_id = 0
    for top, alphabets in (("images_background", bg), ("images_evaluation", ev)):
        for alphabet in sorted(alphabets):
            task_names.append(alphabet)
            for c in range(chars_per_alphabet):
                character = f"character{c + 1:02d}"
                folder = base / top / alphabet / character
                folder.mkdir(parents=True, exist_ok=True)
                label = len(class_names)
                class_names.append(f"{alphabet}/{character}")
                task_of_class.append(len(task_names) - 1)
                image_id += 1
                pattern = rng.random((cells, cells)) < 0.3
                for d in range(1, drawers + 1):
                    drawing = pattern ^ (rng.random((cells, cells)) < 0.08)
                    strokes = np.kron(drawing, np.ones((scale, scale), bool))[:size, :size]
                    path = folder / f"{image_id:04d}_{d:02d}.png"
                    omniglot_png(path, strokes)
                    files.append(path)
                    (y_train if d <= 15 else y_test).append(label)
    return Fake(base, files, class_names, np.array(y_train, np.int64), np.array(y_test, np.int64),
                task_names=task_names, task_of_class=task_of_class)


# ---------------------------------------------------------------- all of them

WRITERS = {"mnist": write_mnist, "cifar10": write_cifar10, "cifar100": write_cifar100,
           "omniglot": write_omniglot}


def make_data_root(tmp_path: str | os.PathLike,
                   datasets: Sequence[str] = ("mnist", "cifar10", "cifar100", "omniglot"),
                   seed: int = 0, **sizes: dict) -> Path:
    """A data root under tmp_path holding tiny copies of `datasets`.

    `sizes` maps a dataset name to keyword arguments of its writer, e.g.
    make_data_root(tmp_path, ("mnist",), mnist={"n_train_per_class": 20}).
    """
    root = Path(tmp_path) / "data"
    root.mkdir(parents=True, exist_ok=True)
    unknown = set(datasets) - set(WRITERS)
    if unknown:
        raise ValueError(f"no fake writer for {sorted(unknown)}")
    for name in datasets:
        WRITERS[name](root, **{"seed": seed, **sizes.get(name, {})})
    return root
