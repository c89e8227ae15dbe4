"""Out-of-distribution sets generated locally (nothing is downloaded), each a :class:`OODSet` of uint8 NCHW images
in the model's input shape; 28x28 grey sources are resized / channel-replicated for other shapes:

* ``mnist`` — the official MNIST test digits shipped in ``data/mnist`` (or a user IDX directory, ``--ood-data-dir``);
* ``letters`` — A–Z/a–z rendered with the installed TrueType fonts (Pillow; PIL's built-in font if none);
* ``gaussian`` / ``uniform`` — pixel noise (N(0.5, 0.25²) clipped, U[0, 1]);
* ``inverted`` / ``flipped`` — the ID test images with inverted intensities / upside down;
* ``digits`` — scikit-learn's 8x8 digits upscaled (bilinear) to 20x20 and centred on 28x28 like MNIST.

Sets whose source is the ID dataset itself (``mnist`` for MNIST, ``digits`` for digits) are skipped. A set that
cannot be built (e.g. no MNIST files) is skipped when it was one of the defaults (``names=None``) and is an
:class:`OODSetError` when the caller named it. The detectors that score them are in :mod:`robustness.ood`.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.data import MNIST_TEST_DIR, find_idx, read_idx

FONT_GLOBS = ("/usr/share/fonts/**/*.ttf", "/usr/local/share/fonts/**/*.ttf", "~/.fonts/**/*.ttf")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ALL_SETS = ("mnist", "letters", "gaussian", "uniform", "inverted", "flipped", "digits")


@dataclass
class OODSet:
    name: str
    images: np.ndarray  # uint8 (N, C, H, W)
    source: str


@dataclass
class Skipped:
    name: str
    reason: str


class OODSetError(ValueError):
    """An OOD set the caller named is unknown or cannot be built."""


# --------------------------------------------------------------------------- shape handling
def to_shape(gray28: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 (N, h, w) grey images -> uint8 (N, C, H, W) (bilinear resize, channels replicated)."""
    from PIL import Image

    c, h, w = shape
    g = np.asarray(gray28, dtype=np.uint8)
    if g.shape[1:] != (h, w):
        g = (
            np.stack([np.asarray(Image.fromarray(im).resize((w, h), Image.BILINEAR)) for im in g])
            if len(g)
            else np.zeros((0, h, w), np.uint8)
        )
    return np.ascontiguousarray(np.repeat(g[:, None], c, axis=1))


# --------------------------------------------------------------------------- generators
def mnist_images(n: int, data_dir: str | Path | None = None, seed: int = 0) -> tuple[np.ndarray, str]:
    """MNIST test images (uint8 N x 28 x 28) from an IDX directory, and the file read (relative to the repository
    when it is inside it)."""
    d = Path(data_dir) if data_dir is not None else MNIST_TEST_DIR
    path = find_idx(d, "t10k-images-idx3-ubyte")
    imgs = read_idx(path)
    idx = np.random.default_rng(seed).permutation(len(imgs))[:n]
    repo = MNIST_TEST_DIR.parents[1]
    shown = path.resolve().relative_to(repo) if path.resolve().is_relative_to(repo) else path
    return imgs[np.sort(idx)], str(shown)


def find_fonts() -> list[str]:
    found: list[str] = []
    for pattern in FONT_GLOBS:
        found += glob.glob(str(Path(pattern).expanduser()), recursive=True)
    return sorted(set(found))


def letter_images(n: int, seed: int = 0, fonts: list[str] | None = None) -> tuple[np.ndarray, str]:
    """Random letters, white on black, 28x28, random font / size / offset / rotation (EMNIST-like)."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    fonts = find_fonts() if fonts is None else fonts
    fonts = [f for f in fonts if "Math" not in Path(f).name] or fonts
    out = np.zeros((n, 28, 28), np.uint8)
    cache: dict = {}
    for i in range(n):
        ch = LETTERS[rng.integers(len(LETTERS))]
        size = int(rng.integers(16, 25))
        if fonts:
            key = (fonts[rng.integers(len(fonts))], size)
            font = cache.get(key)
            if font is None:
                font = cache[key] = ImageFont.truetype(key[0], size)
        else:
            font = cache.get(size) or cache.setdefault(size, ImageFont.load_default(size=size))
        img = Image.new("L", (40, 40), 0)
        draw = ImageDraw.Draw(img)
        x0, y0, x1, y1 = draw.textbbox((0, 0), ch, font=font)
        draw.text(((40 - (x1 - x0)) / 2 - x0, (40 - (y1 - y0)) / 2 - y0), ch, fill=255, font=font)
        img = img.rotate(float(rng.uniform(-15, 15)), resample=Image.BILINEAR)
        dx, dy = rng.integers(-2, 3, size=2)
        img = img.crop((6 + dx, 6 + dy, 34 + dx, 34 + dy))
        out[i] = np.asarray(img)
    src = f"{len(fonts)} TrueType fonts" if fonts else "PIL built-in default font"
    return out, src


def noise_images(n: int, kind: str, seed: int = 0, hw: tuple[int, int] = (28, 28)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "gaussian":
        x = rng.normal(0.5, 0.25, size=(n, *hw))
    elif kind == "uniform":
        x = rng.uniform(0.0, 1.0, size=(n, *hw))
    else:
        raise ValueError(f"unknown noise kind {kind!r}")
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)


def digits_images(n: int, seed: int = 0) -> np.ndarray:
    """sklearn 8x8 digits -> 20x20 (bilinear) centred in 28x28, 0..16 scaled to 0..255."""
    from PIL import Image
    from sklearn.datasets import load_digits

    imgs = np.round(load_digits().images * (255.0 / 16.0)).astype(np.uint8)
    idx = np.sort(np.random.default_rng(seed).permutation(len(imgs))[:n])
    out = np.zeros((len(idx), 28, 28), np.uint8)
    for j, i in enumerate(idx):
        out[j, 4:24, 4:24] = np.asarray(Image.fromarray(imgs[i]).resize((20, 20), Image.BILINEAR))
    return out


def _build_set(
    name: str,
    id_name: str,
    id_test_images: np.ndarray,
    shape: tuple[int, int, int],
    n: int,
    seed: int,
    mnist_dir: str | Path | None,
) -> OODSet | Skipped:
    """One OOD set, or :class:`Skipped` when its source is the ID data (randomness: ``seed`` and the set's name)."""
    c, h, w = shape
    id_idx = np.sort(np.random.default_rng(seed).permutation(len(id_test_images))[:n])
    seed = seed * 7919 + ALL_SETS.index(name)
    if name in ("mnist", "digits") and id_name == name:
        return Skipped(name, f"the ID dataset is {id_name}")
    if name == "mnist":
        imgs, src = mnist_images(n, mnist_dir, seed)
        return OODSet(name, to_shape(imgs, shape), f"MNIST test ({src})")
    if name == "letters":
        imgs, src = letter_images(n, seed)
        return OODSet(name, to_shape(imgs, shape), f"rendered letters ({src})")
    if name in ("gaussian", "uniform"):
        imgs = noise_images(n, name, seed, (h, w))
        return OODSet(
            name,
            np.ascontiguousarray(np.repeat(imgs[:, None], c, axis=1)),
            "N(0.5, 0.25^2) clipped" if name == "gaussian" else "U[0, 1]",
        )
    if name == "inverted":
        return OODSet(name, (255 - id_test_images[id_idx]).astype(np.uint8), f"{id_name} test, 255 - x")
    if name == "flipped":
        return OODSet(
            name, np.ascontiguousarray(id_test_images[id_idx][:, :, ::-1, :]), f"{id_name} test, upside down"
        )
    return OODSet(name, to_shape(digits_images(n, seed), shape), "sklearn digits upscaled")


def make_ood_sets(
    id_name: str,
    id_test_images: np.ndarray,
    shape: tuple[int, int, int],
    n: int,
    seed: int = 0,
    mnist_dir: str | Path | None = None,
    names: tuple[str, ...] | None = None,
) -> tuple[list[OODSet], list[Skipped]]:
    """Build the OOD sets at the model's input shape, ``n`` points each (deterministic for ``seed``).

    ``names=None``: every set of :data:`ALL_SETS`, skipping (with the reason) those that cannot be built.
    Named sets must all be buildable: an unknown or unavailable one raises :class:`OODSetError`. Each set's
    randomness depends on the seed and its name only, not on which other sets are asked for.
    """
    explicit = names is not None
    names = tuple(names) if explicit else ALL_SETS
    unknown = [x for x in names if x not in ALL_SETS]
    if unknown:
        raise OODSetError(f"unknown OOD sets {unknown}; expected some of {', '.join(ALL_SETS)}")
    sets: list[OODSet] = []
    skipped: list[Skipped] = []
    for name in names:
        try:
            built = _build_set(name, id_name, id_test_images, shape, n, seed, mnist_dir)
        except OSError as err:
            if explicit:
                hint = " (pass the directory holding t10k-images-idx3-ubyte[.gz])" if name == "mnist" else ""
                raise OODSetError(f"OOD set {name!r} is not available: {err}{hint}") from err
            built = Skipped(name, f"not available: {err}")
        (skipped if isinstance(built, Skipped) else sets).append(built)
    return sets, skipped
