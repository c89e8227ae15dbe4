"""A folder of the user's own images (torchvision's ``ImageFolder`` layout) as a dataset.

``DIR/<class>/<image>`` (a fixed-seed stratified test split is carved out) or ``DIR/train/<class>/...`` with
``DIR/test/<class>/...``. Class names are the folder names in sorted order. Images (PNG, JPEG, BMP, WebP) are decoded
with Pillow and converted exactly as the service converts an upload (:mod:`serving.images`: alpha composited over
white, ``L`` or ``RGB``, box/bilinear resize), so a served image file gives the model what training gave it.

Every problem (a missing folder, an unreadable or corrupt file, an empty class folder, a single class, mixed sizes
without ``--image-size``) raises :class:`FolderDataError` with one line naming the file or folder, before any
training starts.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from serving.errors import ApiError
from serving.images import _resize, _to_mode
from training.data import DatasetNotFoundError, RawDataset, Split

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
COLOUR_MODES = {"RGB", "RGBA", "RGBa", "P", "PA", "CMYK", "YCbCr"}
MAX_SIDE = 1024  # --image-size bound per side
MAX_DATASET_BYTES = 4 << 30  # decoded uint8 pixels of all splits together
DEFAULT_TEST_FRACTION = 0.2
SPLIT_SEED = 0  # the test split of a folder without train/test is the same for every run (any training seed)


class FolderDataError(DatasetNotFoundError):
    """The image folder cannot be used as it is; the message (one line) names the file or folder."""


def parse_image_size(text: str | None) -> tuple[int, int] | None:
    """``"32"`` -> (32, 32); ``"24x32"`` -> (24, 32) as (height, width); ``None`` -> ``None``."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?", str(text))
    if not m:
        raise ValueError(f"--image-size {text!r}: expected H or HxW in pixels, e.g. 32 or 32x48")
    h, w = int(m.group(1)), int(m.group(2) or m.group(1))
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise ValueError(f"--image-size {text!r}: each side must be between 1 and {MAX_SIDE} pixels")
    return h, w


@dataclass(frozen=True)
class FolderSplit:
    """How the folder was split: recorded in the run's config so the split can be rebuilt."""

    layout: str  # "train/test folders" | "one folder, stratified test split"
    test_fraction: float | None
    seed: int | None
    image_size: tuple[int, int]
    channels: int
    counts: dict[str, dict[str, int]]

    def to_dict(self) -> dict:
        return {
            "layout": self.layout,
            "test_fraction": self.test_fraction,
            "split_seed": self.seed,
            "image_size": list(self.image_size),
            "channels": self.channels,
            "counts": self.counts,
        }


def _class_dirs(root: Path) -> list[Path]:
    dirs = sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name
    )
    if len(dirs) < 2:
        found = f"only {dirs[0].name!r}" if dirs else "none"
        raise FolderDataError(
            f"{root}: expected one sub-folder per class, at least 2 classes (found {found}); layout: "
            f"{root}/<class>/<image> or {root}/train/<class>/... and {root}/test/<class>/..."
        )
    return dirs


def _image_files(class_dir: Path) -> list[Path]:
    files = sorted(
        p
        for p in class_dir.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(class_dir).parts)
    )
    if not files:
        raise FolderDataError(f"class folder {class_dir} holds no image ({', '.join(IMAGE_SUFFIXES)})")
    return files


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _open(path: Path, decode: bool = True) -> Image.Image:
    """Open one file, and decode it fully with ``decode`` (a truncated or corrupt file fails, naming the file)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(path)
            if decode:
                img.load()
        except (
            OSError,
            ValueError,
            SyntaxError,
            EOFError,
            Image.DecompressionBombWarning,
            Image.DecompressionBombError,
        ) as err:
            raise FolderDataError(f"cannot read image {path}: {_one_line(err)}") from None
    if decode and img.format == "JPEG":
        img = ImageOps.exif_transpose(img) or img
    return img


def _upright_size(img: Image.Image) -> tuple[int, int]:
    """(height, width) as decoded: a JPEG's EXIF orientation 5-8 turns it by 90 degrees."""
    turned = img.format == "JPEG" and img.getexif().get(0x0112) in (5, 6, 7, 8)
    return (img.width, img.height) if turned else (img.height, img.width)


def _convert(path: Path, channels: int, size: tuple[int, int]) -> np.ndarray:
    """uint8 (C, H, W) of one file, converted as the service converts an upload."""
    img = _open(path)
    try:
        img = _to_mode(img, channels)
        if img.size != (size[1], size[0]):
            img = _resize(img, (size[1], size[0]))
        arr = np.asarray(img, dtype=np.uint8)
    except ApiError as err:
        raise FolderDataError(f"cannot use image {path}: {err.message}") from None
    finally:
        img.close()
    return arr[None] if channels == 1 else np.ascontiguousarray(arr.transpose(2, 0, 1))


def _scan(
    groups: dict[str, list[list[Path]]], image_size: tuple[int, int] | None
) -> tuple[int, tuple[int, int]]:
    """Channels (1 unless any image is colour) and the (height, width) every image is brought to."""
    sizes: Counter[tuple[int, int]] = Counter()
    example: dict[tuple[int, int], Path] = {}
    colour = False
    for per_class in groups.values():
        for files in per_class:
            for path in files:
                with _open(path, decode=False) as img:  # the header; _read decodes every file
                    hw = _upright_size(img)
                    colour = colour or img.mode in COLOUR_MODES
                sizes[hw] += 1
                example.setdefault(hw, path)
    if image_size is None and len(sizes) > 1:
        (common, n), (other, m) = sizes.most_common(2)
        raise FolderDataError(
            f"images differ in size ({n} are {common[0]}x{common[1]}, e.g. {example[common]}; {m} are "
            f"{other[0]}x{other[1]}, e.g. {example[other]}; {len(sizes)} sizes in all): pass --image-size "
            f"{common[0]}x{common[1]} (or another HxW) to resize them all"
        )
    return (3 if colour else 1), (image_size or next(iter(sizes)))


def _read(files_per_class: list[list[Path]], channels: int, size: tuple[int, int]) -> Split:
    images = [_convert(p, channels, size) for files in files_per_class for p in files]
    labels = [k for k, files in enumerate(files_per_class) for _ in files]
    return Split(np.stack(images), np.asarray(labels, dtype=np.int64))


def load_image_folder(
    root: Path | None, image_size: str | None = None, test_fraction: float = DEFAULT_TEST_FRACTION
) -> tuple[RawDataset, FolderSplit]:
    """The folder's train and test splits and how they were made (raises :class:`FolderDataError`)."""
    if root is None:
        raise FolderDataError("--dataset folder needs --data-dir DIR (DIR/<class>/<image>)")
    if not root.is_dir():
        raise FolderDataError(f"--data-dir {root}: no such folder")
    size = parse_image_size(image_size)
    if (root / "train").is_dir() and (root / "test").is_dir():
        train_dirs, test_dirs = _class_dirs(root / "train"), _class_dirs(root / "test")
        classes = [d.name for d in train_dirs]
        missing = sorted(set(classes) ^ {d.name for d in test_dirs})
        if missing:
            raise FolderDataError(
                f"{root}/train and {root}/test must hold the same class folders; differing: "
                f"{', '.join(missing)}"
            )
        groups = {
            "train": [_image_files(d) for d in train_dirs],
            "test": [_image_files(d) for d in test_dirs],
        }
        layout, fraction, split_seed = "train/test folders", None, None
    else:
        dirs = _class_dirs(root)
        classes = [d.name for d in dirs]
        files = [_image_files(d) for d in dirs]
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"--test-fraction must be in (0, 1), got {test_fraction}")
        groups = _stratified(files, dirs, test_fraction, SPLIT_SEED)
        layout, fraction, split_seed = "one folder, stratified test split", test_fraction, SPLIT_SEED
    channels, size = _scan(groups, size)
    n_pixels = sum(len(f) for g in groups.values() for f in g) * channels * size[0] * size[1]
    if n_pixels > MAX_DATASET_BYTES:
        raise FolderDataError(
            f"{root}: the images would take {n_pixels / 2**30:.1f} GiB at {size[0]}x{size[1]} "
            f"(limit {MAX_DATASET_BYTES / 2**30:.0f} GiB); pass a smaller --image-size"
        )
    train, test = _read(groups["train"], channels, size), _read(groups["test"], channels, size)
    counts = {name: {c: len(f) for c, f in zip(classes, g, strict=True)} for name, g in groups.items()}
    return RawDataset(train, test, classes), FolderSplit(layout, fraction, split_seed, size, channels, counts)


def _stratified(
    files: list[list[Path]], dirs: list[Path], fraction: float, seed: int
) -> dict[str, list[list[Path]]]:
    """A fixed-seed split of every class's files: ``round(fraction * n)`` of each (at least 1) go to test."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for d, paths in zip(dirs, files, strict=True):
        if len(paths) < 3:
            raise FolderDataError(
                f"class folder {d} holds {len(paths)} image(s); at least 3 are needed (training, "
                f"validation and test each get one), or give {d.parent}/train and {d.parent}/test "
                "folders"
            )
        order = rng.permutation(len(paths))
        n_test = min(max(1, round(fraction * len(paths))), len(paths) - 2)
        test.append([paths[i] for i in sorted(order[:n_test])])
        train.append([paths[i] for i in sorted(order[n_test:])])
    return {"train": train, "test": test}
