"""Out-of-distribution sets generated locally (nothing is downloaded) and post-hoc OOD detectors.

OOD sets (each a :class:`OODSet` of uint8 NCHW images in the model's input shape; 28x28 grey sources are resized /
channel-replicated for other shapes):

* ``mnist`` — the official MNIST test digits shipped in ``data/mnist`` (or a user IDX directory, ``--ood-data-dir``);
* ``letters`` — A–Z/a–z rendered with the installed TrueType fonts (Pillow; PIL's built-in font if none);
* ``gaussian`` / ``uniform`` — pixel noise (N(0.5, 0.25²) clipped, U[0, 1]);
* ``inverted`` / ``flipped`` — the ID test images with inverted intensities / upside down;
* ``digits`` — scikit-learn's 8x8 digits upscaled (bilinear) to 20x20 and centred on 28x28 like MNIST.

Sets whose source is the ID dataset itself (``mnist`` for MNIST, ``digits`` for digits) are skipped. A set that
cannot be built (e.g. no MNIST files) is skipped when it was one of the defaults (``names=None``) and is an
:class:`OODSetError` when the caller named it.

Detectors (``fit(train features)`` then ``score(features)``, higher = more in-distribution): the artifact's
``reliability``, ``max_softmax``, ``energy`` (logsumexp of the logits, T = 1), ``max_logit``, ``mahalanobis``
(:class:`training.mahalanobis.TiedGaussian` on the latent ``z`` of training data; score = -min_k squared
distance) and ``knn`` (L2-normalised ``z``; score = -distance to the k-th nearest training latent, sklearn
NearestNeighbors). ``z`` is what the model's classifier layer sees: the 8-d latent for the penalised heads, the
256-d feature for ``no_pen``.

The evaluation (:func:`model_features`, :func:`evaluation_points`, :func:`ood_table`) is the one pipeline of the
bench and of ``scripts/ood_eval.py``: the same point counts and seed give the same numbers.
"""

from __future__ import annotations

import glob
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.special import logsumexp
from torch import nn

from robustness import detection_metrics as M
from training.data import MNIST_TEST_DIR, find_idx, read_idx
from training.inference import forward_batches
from training.mahalanobis import DEFAULT_RIDGE, TiedGaussian
from training.score import SoftmaxScore, VertexScore

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


# --------------------------------------------------------------------------- detectors
@dataclass
class Features:
    logits: np.ndarray  # (N, K) float
    z: np.ndarray  # (N, d) float
    reliability: np.ndarray | None = None  # (N,) the artifact's score


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


def log_max_softmax(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``log p`` and ``log(1 - p)`` of the max-softmax probability ``p``, float64, exact at any logit margin.

    ``p`` itself rounds to exactly 1 once the margin passes ~17 (float32) or ~37 (float64): most test points of a
    plain classifier trained to a small CE (69% of no_pen's at 20 epochs, in float32), which then tie.
    """
    lo = np.asarray(logits, dtype=np.float64)
    rows, top = np.arange(len(lo)), lo.argmax(axis=1)
    rest = lo.copy()
    rest[rows, top] = -np.inf
    lse = logsumexp(lo, axis=1)
    return lo[rows, top] - lse, logsumexp(rest, axis=1) - lse


class MaxSoftmaxDetector(Detector):
    """Max-softmax, ranked by ``log p - log(1 - p)`` (monotone in ``p``, so the same AUROC where ``p`` does not
    round to 1, and no ties where it would)."""

    name = "max_softmax"

    def score(self, f):
        return self.from_log(*log_max_softmax(f.logits))

    @staticmethod
    def from_log(log_p: np.ndarray, log_rest: np.ndarray) -> np.ndarray:
        """The score from :func:`log_max_softmax`'s ``log p`` and ``log(1 - p)``."""
        return log_p - log_rest


class EnergyDetector(Detector):
    name = "energy"

    def __init__(self, temperature: float = 1.0):
        self.temperature = temperature

    def score(self, f):
        return self.temperature * logsumexp(np.asarray(f.logits, dtype=np.float64) / self.temperature, axis=1)


class MaxLogitDetector(Detector):
    name = "max_logit"

    def score(self, f):
        return np.asarray(f.logits, dtype=np.float64).max(axis=1)


class MahalanobisDetector(Detector):
    """:class:`training.mahalanobis.TiedGaussian` fitted on training ``z``; score = -min_k squared distance."""

    name = "mahalanobis"

    def __init__(self, ridge: float = DEFAULT_RIDGE):
        self.ridge = ridge

    def fit(self, train, labels):
        self.model = TiedGaussian.fit(train.z, labels, ridge=self.ridge)
        return self

    def score(self, f):
        return -self.model.sq_dist(f.z).min(axis=1)


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


def fit_detectors(
    train: Features, labels: np.ndarray, names: tuple[str, ...] = tuple(DETECTORS), knn_k: int = 10
) -> dict[str, Detector]:
    out = {}
    for name in names:
        if name == "reliability" and train.reliability is None:
            continue
        det = KNNDetector(knn_k) if name == "knn" else DETECTORS[name]()
        out[name] = det.fit(train, labels)
    return out


# --------------------------------------------------------------------------- the evaluation pipeline
def subsample(n_total: int, n: int | None, seed: int) -> np.ndarray:
    """Sorted indices of ``min(n, n_total)`` rows drawn without replacement (all rows, in order, if ``n`` is None)."""
    return np.sort(
        np.random.default_rng(seed).permutation(n_total)[: n_total if n is None else min(n, n_total)]
    )


def evaluation_points(
    n_test: int, n_train: int, n_id: int | None, n_fit: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(id_idx, fit_idx)``: the ID test points (drawn with ``seed + 2``) and the training points the detectors are
    fitted on (``seed + 3``); the OOD sets take ``n_ood`` points each from :func:`make_ood_sets` with ``seed``."""
    return subsample(n_test, n_id, seed + 2), subsample(n_train, n_fit, seed + 3)


def score_outputs(
    score: VertexScore | SoftmaxScore, logits: np.ndarray, z: np.ndarray
) -> dict[str, np.ndarray]:
    """``logits`` and the score module's outputs (numpy, the artifact's output names)."""
    with torch.no_grad():
        out = score(torch.from_numpy(logits), torch.from_numpy(z))
    return {"logits": logits, **{k: v.numpy() for k, v in out._asdict().items()}}


def model_features(
    model: nn.Module,
    score: VertexScore | SoftmaxScore | None,
    images: np.ndarray,
    batch_size: int = 512,
    device: str = "cpu",
) -> Features:
    """Logits and z of uint8 ``images`` (:func:`training.inference.forward_batches`) and, with a score module,
    its reliability."""
    logits, z = forward_batches(model, images, batch_size, device)
    rel = None if score is None or not len(logits) else score_outputs(score, logits, z)["reliability"]
    return Features(logits, z, rel)


def detector_scores(detectors: dict[str, Detector], f: Features) -> dict[str, np.ndarray]:
    return {name: d.score(f) for name, d in detectors.items()}


def ood_table(
    s_id: dict[str, np.ndarray],
    s_ood: dict[str, dict[str, np.ndarray]],
    roc_points: int = 0,
    n_boot: int = 0,
    boot_seed: int = 0,
) -> dict[str, dict[str, dict]]:
    """``{set: {detector: metrics}}``: :func:`robustness.detection_metrics.ood_metrics` of ID vs each OOD set, plus a thinned
    ROC curve (``roc_points`` > 0) and a 95% bootstrap interval of the AUROC (``n_boot`` > 0)."""
    table: dict[str, dict[str, dict]] = {}
    for set_name, scores in s_ood.items():
        table[set_name] = {}
        for det, s in scores.items():
            row = M.ood_metrics(s_id[det], s)
            if n_boot:
                row["auroc_ci95"] = list(M.bootstrap_interval(s_id[det], s, M.auroc, n_boot, boot_seed))
            if roc_points:
                row["roc"] = M.roc_points(s_id[det], s, roc_points)
            table[set_name][det] = row
    return table
