"""Dataset registry: every loader returns uint8 images (N, C, H, W), int64 labels and class names.

Loaders read local files only; nothing is ever downloaded. Missing or corrupt data raises
:class:`DatasetNotFoundError` with the paths searched and how to get the files.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
# The official MNIST test set (t10k IDX files) shipped with the repository: the default OOD set (data/mnist/README.md).
MNIST_TEST_DIR = Path(__file__).resolve().parents[1] / "data" / "mnist"
FASHION_MNIST_CLASSES = [
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
]
MNIST_CLASSES = [str(i) for i in range(10)]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class DatasetNotFoundError(RuntimeError):
    """Raised when a dataset's files are missing or unreadable (never triggers a download)."""


@dataclass(frozen=True)
class Split:
    """One split: images uint8 (N, C, H, W) and labels int64 (N,)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class DatasetSplits:
    """Train / validation / test splits of one dataset plus what the model needs to know about it."""

    name: str
    classes: list[str]
    train: Split
    val: Split
    test: Split
    source: dict | None = None  # how an image folder was read and split (recorded in the run's config.json)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width)."""
        c, h, w = self.train.images.shape[1:]
        return int(c), int(h), int(w)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the training split, for pixels scaled to [0, 1]."""
        x = self.train.images.astype(np.float64) / 255.0
        mean = x.mean(axis=(0, 2, 3))
        std = x.std(axis=(0, 2, 3))
        return [float(m) for m in mean], [float(max(s, 1e-6)) for s in std]


@dataclass(frozen=True)
class RawDataset:
    """What a loader returns before the validation split is carved out."""

    train: Split
    test: Split
    classes: list[str]
    source: dict | None = None


Loader = Callable[..., RawDataset]
_REGISTRY: dict[str, tuple[Loader, str]] = {}
_TAKES_OPTIONS: set[str] = set()  # loaders called with (data_dir, image_size=, test_fraction=)


def register(name: str, how_to_get: str, options: bool = False) -> Callable[[Loader], Loader]:
    """Register a loader under ``name``; ``how_to_get`` is shown when its files are missing. ``options``: the loader
    also takes the folder options (image size, test fraction)."""

    def wrap(fn: Loader) -> Loader:
        _REGISTRY[name] = (fn, how_to_get)
        if options:
            _TAKES_OPTIONS.add(name)
        return fn

    return wrap


def available_datasets() -> list[str]:
    return sorted(_REGISTRY)


def num_classes_of(name: str) -> int | None:
    """The class count of a built-in dataset without loading it (``None`` for ``folder``: its folders decide)."""
    return None if name in _TAKES_OPTIONS else 10


# --------------------------------------------------------------------------- IDX (MNIST family)
_IDX_DTYPES = {0x08: np.uint8}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4:
        raise ValueError(f"{path}: file too short for an IDX header")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code not in _IDX_DTYPES or ndim == 0:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes (magic {data[:4].hex()})")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    expected = int(np.prod(shape))
    if body.size != expected:
        raise ValueError(f"{path}: expected {expected} values for shape {shape}, found {body.size}")
    return body.reshape(shape)


def find_idx(directory: Path, stem: str) -> Path:
    """``DIR/STEM.gz`` or ``DIR/STEM``, whichever exists."""
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(directory / f"{stem}.gz")


def load_idx_dir(directory: Path, classes: list[str]) -> RawDataset:
    """Load the four MNIST-style IDX files (``.gz`` or plain) from ``directory``."""
    parts = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(find_idx(directory, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(find_idx(directory, f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
        if images.ndim != 3 or len(images) != len(labels):
            raise ValueError(
                f"{directory}: {prefix} images {images.shape} do not match labels {labels.shape}"
            )
        if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
            raise ValueError(f"{directory}: {prefix} labels outside 0..{len(classes) - 1}")
        parts[split] = Split(np.ascontiguousarray(images[:, None]), labels)
    return RawDataset(parts["train"], parts["test"], classes)


@register(
    "fashion-mnist",
    "install the Debian package `dataset-fashion-mnist` (apt-get install dataset-fashion-mnist) or pass "
    "--data-dir DIR with train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
    "t10k-labels-idx1-ubyte.gz",
)
def load_fashion_mnist(data_dir: Path | None) -> RawDataset:
    return load_idx_dir(data_dir or FASHION_MNIST_DIR, FASHION_MNIST_CLASSES)


@register(
    "mnist",
    "pass --data-dir DIR holding the four MNIST IDX files (train-images-idx3-ubyte[.gz], "
    "train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz])",
)
def load_mnist(data_dir: Path | None) -> RawDataset:
    if data_dir is None:
        raise FileNotFoundError("no --data-dir given")
    return load_idx_dir(data_dir, MNIST_CLASSES)


@register("digits", "scikit-learn's embedded 8x8 digits; reinstall scikit-learn if this fails")
def load_digits_dataset(data_dir: Path | None) -> RawDataset:
    """sklearn's 8x8 digits (1,797 images, 0..16 scaled to 0..255); a fixed 20% is the test split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = bunch.target.astype(np.int64)
    order = np.random.default_rng(1234).permutation(len(labels))
    n_test = len(labels) // 5
    test, train = order[:n_test], order[n_test:]
    return RawDataset(Split(images[train], labels[train]), Split(images[test], labels[test]), MNIST_CLASSES)


@register(
    "cifar10",
    "pass --data-dir DIR containing torchvision's `cifar-10-batches-py/` folder (the python pickle batches); "
    "nothing is downloaded",
)
def load_cifar10(data_dir: Path | None) -> RawDataset:
    if data_dir is None:
        raise FileNotFoundError("no --data-dir given")
    root = data_dir / "cifar-10-batches-py" if (data_dir / "cifar-10-batches-py").is_dir() else data_dir

    def batch(name: str) -> tuple[np.ndarray, np.ndarray]:
        with open(root / name, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        images = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(entry.get("labels", entry.get("fine_labels")), dtype=np.int64)
        return images, labels

    train_batches = sorted(p.name for p in root.glob("data_batch_*"))
    if not train_batches:
        raise FileNotFoundError(root / "data_batch_1")
    parts = [batch(name) for name in train_batches]
    train = Split(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    test_images, test_labels = batch("test_batch")
    classes = CIFAR10_CLASSES
    meta = root / "batches.meta"
    if meta.is_file():
        with open(meta, "rb") as f:
            classes = list(pickle.load(f, encoding="latin1")["label_names"])
    return RawDataset(train, Split(test_images, test_labels), classes)


@register(
    "svhn",
    "pass --data-dir DIR containing torchvision's SVHN files train_32x32.mat and test_32x32.mat; "
    "nothing is downloaded",
)
def load_svhn(data_dir: Path | None) -> RawDataset:
    if data_dir is None:
        raise FileNotFoundError("no --data-dir given")
    from scipy.io import loadmat

    def part(name: str) -> Split:
        mat = loadmat(str(data_dir / name))
        images = np.transpose(np.asarray(mat["X"], dtype=np.uint8), (3, 2, 0, 1))  # HWCN -> NCHW
        labels = np.asarray(mat["y"], dtype=np.int64).reshape(-1)
        labels[labels == 10] = 0  # torchvision's convention: digit 0 is stored as 10
        return Split(np.ascontiguousarray(images), labels)

    return RawDataset(part("train_32x32.mat"), part("test_32x32.mat"), MNIST_CLASSES)


@register(
    "folder",
    "pass --data-dir DIR with one sub-folder of images per class (DIR/<class>/<image>), or DIR/train/<class>/... "
    "and DIR/test/<class>/...",
    options=True,
)
def load_folder(
    data_dir: Path | None, image_size: str | None = None, test_fraction: float = 0.2
) -> RawDataset:
    """The user's own images (:mod:`training.imagefolder`)."""
    from training.imagefolder import FolderDataError, load_image_folder

    try:
        raw, split = load_image_folder(data_dir, image_size, test_fraction)
    except ValueError as err:
        raise FolderDataError(str(err)) from None
    return RawDataset(raw.train, raw.test, raw.classes, {"data_dir": str(data_dir), **split.to_dict()})


# --------------------------------------------------------------------------- public entry point
def _searched_paths(name: str, data_dir: Path | None) -> str:
    if data_dir is not None:
        return str(data_dir)
    if name == "fashion-mnist":
        return str(FASHION_MNIST_DIR)
    return "(none: this dataset needs --data-dir)" if name != "digits" else "scikit-learn package data"


def load_raw(name: str, data_dir: str | Path | None = None, **options) -> RawDataset:
    """Load a registered dataset's train and test splits, or raise a clear :class:`DatasetNotFoundError`.
    ``options`` (``image_size``, ``test_fraction``) reach the loaders that take them (``folder``)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(available_datasets())}")
    loader, how_to_get = _REGISTRY[name]
    path = Path(data_dir).expanduser() if data_dir is not None else None
    try:
        raw = loader(path, **options) if name in _TAKES_OPTIONS else loader(path)
    except DatasetNotFoundError:
        raise
    except (OSError, ValueError, KeyError, EOFError, pickle.UnpicklingError, NotImplementedError) as err:
        raise DatasetNotFoundError(
            f"dataset {name!r} could not be loaded: {err}. Searched: {_searched_paths(name, path)}. "
            f"To fix: {how_to_get}."
        ) from None
    return raw


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    image_size: str | None = None,
    test_fraction: float = 0.2,
) -> DatasetSplits:
    """Load ``name`` and carve a fixed-seed, class-stratified validation split out of its training set.
    ``image_size`` and ``test_fraction`` apply to ``folder`` only."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if name not in _TAKES_OPTIONS and image_size is not None:
        raise ValueError(f"--image-size applies to --dataset folder only, not {name!r}")
    options = {"image_size": image_size, "test_fraction": test_fraction}
    raw = load_raw(name, data_dir, **options)
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(raw.train))
    counts = np.bincount(raw.train.labels)
    n_val = int(np.ceil(val_fraction * len(idx)))
    # Stratify by class when every class can appear on both sides; tiny datasets fall back to a plain shuffle.
    stratify = (
        raw.train.labels if counts[counts > 0].min() >= 2 and n_val >= np.count_nonzero(counts) else None
    )
    train_idx, val_idx = train_test_split(idx, test_size=val_fraction, random_state=seed, stratify=stratify)
    train_idx, val_idx = np.sort(train_idx), np.sort(val_idx)
    tr = Split(raw.train.images[train_idx], raw.train.labels[train_idx])
    va = Split(raw.train.images[val_idx], raw.train.labels[val_idx])
    source = (
        None
        if raw.source is None
        else {
            **raw.source,
            "val_fraction": val_fraction,
            "val_seed": seed,
            "n": {"train": len(tr), "val": len(va), "test": len(raw.test)},
        }
    )
    return DatasetSplits(name=name, classes=list(raw.classes), train=tr, val=va, test=raw.test, source=source)


def load_run_data(cfg) -> DatasetSplits:
    """The splits a run trains and is evaluated on, from its :class:`~training.config.TrainConfig`."""
    return load_dataset(
        cfg.dataset,
        cfg.data_dir,
        cfg.val_fraction,
        cfg.seed,
        getattr(cfg, "image_size", None),
        getattr(cfg, "test_fraction", 0.2),
    )
