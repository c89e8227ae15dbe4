"""Out-of-distribution sets generated locally (nothing is downloaded) and post-hoc OOD detectors.

OOD sets (each a :class:`OODSet` of uint8 NCHW images in the model's input shape; 28x28 grey sources are resized /
channel-replicated for other shapes):

* ``mnist`` — the official MNIST test digits shipped in ``data/mnist`` (or a user IDX directory, ``--ood-data-dir``);
* ``letters`` — A–Z/a–z rendered with the installed TrueType fonts (Pillow; PIL's built-in font if none);
* ``gaussian`` / ``uniform`` — pixel noise (N(0.5, 0.25²) clipped, U[0, 1]);
* ``inverted`` / ``flipped`` — the ID test images with inverted intensities / upside down;
* ``digits`` — scikit-learn's 8x8 digits upscaled (bilinear) to 20x20 and centred on 28x28 like MNIST.

Sets whose source is the ID dataset itself (``mnist`` for MNIST, ``digits`` for digits) are skipped.

Detectors (``fit(train features)`` then ``score(features)``, higher = more in-distribution): the artifact's
``reliability``, ``max_softmax``, ``energy`` (logsumexp of the logits, T = 1), ``max_logit``, ``mahalanobis``
(class means + one shared covariance of the latent ``z`` on training data; score = -min_k squared distance) and
``knn`` (L2-normalised ``z``; score = -distance to the k-th nearest training latent, sklearn NearestNeighbors).
``z`` is what the model's classifier layer sees: the 8-d latent for the penalised heads, the 256-d feature for
``no_pen``.
"""

from __future__ import annotations

import glob
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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


# --------------------------------------------------------------------------- shape handling
def to_shape(gray28: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 (N, h, w) grey images -> uint8 (N, C, H, W) (bilinear resize, channels replicated)."""
    from PIL import Image

    c, h, w = shape
    g = np.asarray(gray28, dtype=np.uint8)
    if g.shape[1:] != (h, w):
        g = np.stack([np.asarray(Image.fromarray(im).resize((w, h), Image.BILINEAR)) for im in g]) if len(g) else \
            np.zeros((0, h, w), np.uint8)
    return np.ascontiguousarray(np.repeat(g[:, None], c, axis=1))


# --------------------------------------------------------------------------- generators
def mnist_images(n: int, data_dir: str | Path | None = None, seed: int = 0) -> tuple[np.ndarray, str]:
    """MNIST test images (uint8 N x 28 x 28) from an IDX directory."""
    from training.data import MNIST_TEST_DIR, find_idx, read_idx

    d = Path(data_dir) if data_dir is not None else MNIST_TEST_DIR
    path = find_idx(d, "t10k-images-idx3-ubyte")
    imgs = read_idx(path)
    idx = np.random.default_rng(seed).permutation(len(imgs))[:n]
    return imgs[np.sort(idx)], str(path)


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


def make_ood_sets(
    id_name: str, id_test_images: np.ndarray, shape: tuple[int, int, int], n: int, seed: int = 0,
    mnist_dir: str | Path | None = None, names: tuple[str, ...] = ALL_SETS,
) -> tuple[list[OODSet], list[Skipped]]:
    """Build the requested OOD sets at the model's input shape (deterministic for ``seed``)."""
    sets: list[OODSet] = []
    skipped: list[Skipped] = []
    c, h, w = shape
    rng = np.random.default_rng(seed)
    id_idx = np.sort(rng.permutation(len(id_test_images))[:n])
    for k, name in enumerate(names):
        s = seed * 7919 + k
        try:
            if name == "mnist":
                if id_name == "mnist":
                    skipped.append(Skipped(name, "the ID dataset is MNIST"))
                    continue
                imgs, src = mnist_images(n, mnist_dir, s)
                sets.append(OODSet(name, to_shape(imgs, shape), f"MNIST test ({src})"))
            elif name == "letters":
                imgs, src = letter_images(n, s)
                sets.append(OODSet(name, to_shape(imgs, shape), f"rendered letters ({src})"))
            elif name in ("gaussian", "uniform"):
                imgs = noise_images(n, name, s, (h, w))
                sets.append(OODSet(name, np.ascontiguousarray(np.repeat(imgs[:, None], c, axis=1)),
                                   "N(0.5, 0.25^2) clipped" if name == "gaussian" else "U[0, 1]"))
            elif name == "inverted":
                sets.append(OODSet(name, (255 - id_test_images[id_idx]).astype(np.uint8),
                                   f"{id_name} test, 255 - x"))
            elif name == "flipped":
                sets.append(OODSet(name, np.ascontiguousarray(id_test_images[id_idx][:, :, ::-1, :]),
                                   f"{id_name} test, upside down"))
            elif name == "digits":
                if id_name == "digits":
                    skipped.append(Skipped(name, "the ID dataset is sklearn digits"))
                    continue
                sets.append(OODSet(name, to_shape(digits_images(n, s), shape), "sklearn digits upscaled"))
            else:
                raise ValueError(f"unknown OOD set {name!r}; expected one of {', '.join(ALL_SETS)}")
        except (OSError, FileNotFoundError) as err:
            skipped.append(Skipped(name, f"not available: {err}"))
    return sets, skipped


# --------------------------------------------------------------------------- detectors
@dataclass
class Features:
    logits: np.ndarray  # (N, K) float
    z: np.ndarray  # (N, d) float
    reliability: np.ndarray | None = None  # (N,) the artifact's score


def _logsumexp(a: np.ndarray) -> np.ndarray:
    m = a.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(a - m).sum(axis=1, keepdims=True))).reshape(-1)


class Detector:
    name = "detector"

    def fit(self, train: Features, labels: np.ndarray) -> Detector:
        return self

    def score(self, f: Features) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError


class ReliabilityDetector(Detector):
    name = "reliability"

    def score(self, f):
        if f.reliability is None:
            raise ValueError("features carry no reliability score")
        return np.asarray(f.reliability, dtype=np.float64)


class MaxSoftmaxDetector(Detector):
    name = "max_softmax"

    def score(self, f):
        lo = np.asarray(f.logits, dtype=np.float64)
        return np.exp(lo.max(axis=1) - _logsumexp(lo))


class EnergyDetector(Detector):
    name = "energy"

    def __init__(self, temperature: float = 1.0):
        self.t = temperature

    def score(self, f):
        return self.t * _logsumexp(np.asarray(f.logits, dtype=np.float64) / self.t)


class MaxLogitDetector(Detector):
    name = "max_logit"

    def score(self, f):
        return np.asarray(f.logits, dtype=np.float64).max(axis=1)


class MahalanobisDetector(Detector):
    """Class means + shared (tied) covariance of z on training data; score = -min_k (z-μ_k)ᵀ Σ⁻¹ (z-μ_k)."""

    name = "mahalanobis"

    def __init__(self, ridge: float = 1e-6):
        self.ridge = ridge

    def fit(self, train, labels):
        z = np.asarray(train.z, dtype=np.float64)
        labels = np.asarray(labels)
        self.classes = np.unique(labels)
        self.means = np.stack([z[labels == k].mean(axis=0) for k in self.classes])
        centred = z - self.means[np.searchsorted(self.classes, labels)]
        cov = centred.T @ centred / max(len(z), 1)
        cov += self.ridge * max(np.trace(cov) / max(cov.shape[0], 1), 1e-12) * np.eye(cov.shape[0])
        self.precision = np.linalg.pinv(cov, hermitian=True)
        return self

    def score(self, f):
        z = np.asarray(f.z, dtype=np.float64)
        best = np.full(len(z), np.inf)
        for mu in self.means:
            d = z - mu
            best = np.minimum(best, np.einsum("ij,jk,ik->i", d, self.precision, d))
        return -best


class KNNDetector(Detector):
    """Sun et al. 2022: -distance to the k-th nearest L2-normalised training latent."""

    name = "knn"

    def __init__(self, k: int = 10):
        self.k = k

    @staticmethod
    def _normalise(z):
        z = np.asarray(z, dtype=np.float64)
        return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)

    def fit(self, train, labels):
        from sklearn.neighbors import NearestNeighbors

        bank = self._normalise(train.z)
        self.k_eff = min(self.k, len(bank))
        self.nn = NearestNeighbors(n_neighbors=self.k_eff).fit(bank)
        return self

    def score(self, f):
        dist, _ = self.nn.kneighbors(self._normalise(f.z), n_neighbors=self.k_eff)
        return -dist[:, -1]


DETECTORS: dict[str, Callable[[], Detector]] = {
    "reliability": ReliabilityDetector,
    "max_softmax": MaxSoftmaxDetector,
    "energy": EnergyDetector,
    "max_logit": MaxLogitDetector,
    "mahalanobis": MahalanobisDetector,
    "knn": KNNDetector,
}


def fit_detectors(train: Features, labels: np.ndarray, names: tuple[str, ...] = tuple(DETECTORS),
                  knn_k: int = 10) -> dict[str, Detector]:
    out = {}
    for name in names:
        if name == "reliability" and train.reliability is None:
            continue
        det = KNNDetector(knn_k) if name == "knn" else DETECTORS[name]()
        out[name] = det.fit(train, labels)
    return out
