"""Backbones and the paper's four heads. Every model maps pixels in [0, 1] to ``(logits, z)``.

Normalisation (per-channel mean/std) lives inside the model, so attacks, ONNX export and serving all feed
raw [0, 1] pixels and the preprocessing travels with the weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from training.config import choices

VARIANTS = choices("variant")


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model from a checkpoint."""

    backbone: str = "cnn"
    variant: str = "bin_enc"
    num_classes: int = 10
    latent_dim: int = 8
    input_shape: tuple[int, int, int] = (1, 28, 28)
    mean: list[float] = field(default_factory=lambda: [0.0])
    std: list[float] = field(default_factory=lambda: [1.0])

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        d = dict(d)
        d["input_shape"] = tuple(d["input_shape"])
        return cls(**d)


BackboneFactory = Callable[[tuple[int, int, int]], tuple[nn.Module, int]]
_BACKBONES: dict[str, BackboneFactory] = {}


def register_backbone(name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    def wrap(fn: BackboneFactory) -> BackboneFactory:
        _BACKBONES[name] = fn
        return fn

    return wrap


def available_backbones() -> list[str]:
    return sorted(_BACKBONES)


@register_backbone("mlp")
def mlp(input_shape: tuple[int, int, int]) -> tuple[nn.Module, int]:
    n_in = math.prod(input_shape)
    net = nn.Sequential(nn.Flatten(), nn.Linear(n_in, 256), nn.SiLU(), nn.Linear(256, 256), nn.SiLU())
    return net, 256


@register_backbone("cnn")
def cnn(input_shape: tuple[int, int, int]) -> tuple[nn.Module, int]:
    """conv16-conv32-pool-conv64-pool-fc256 with SiLU (any input >= 8x8)."""
    c, h, w = input_shape
    net = nn.Sequential(
        nn.Conv2d(c, 16, 3, padding=1),
        nn.SiLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.SiLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.SiLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * (h // 4) * (w // 4), 256),
        nn.SiLU(),
    )
    return net, 256


@register_backbone("resnet18")
def resnet18(input_shape: tuple[int, int, int]) -> tuple[nn.Module, int]:
    """torchvision ResNet-18 with the CIFAR stem (3x3 conv, no max-pool) and SiLU activations."""
    from torchvision.models import resnet18 as tv_resnet18

    net = tv_resnet18(weights=None, num_classes=10)
    net.conv1 = nn.Conv2d(input_shape[0], 64, 3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    for module in net.modules():
        for name, child in module.named_children():
            if isinstance(child, nn.ReLU):
                setattr(module, name, nn.SiLU(inplace=True))
    return net, 512


def min_latent_dim(num_classes: int) -> int:
    """Smallest hypercube dimension with a distinct vertex per class."""
    return max(1, math.ceil(math.log2(num_classes)))


def default_latent_dim(num_classes: int) -> int:
    """The latent width when none is given: one dimension per class up to 8 (8 for Fashion-MNIST's 10 classes, as
    the paper), and never fewer than :func:`min_latent_dim` (so 10 for 1,000 classes)."""
    return max(min_latent_dim(num_classes), min(num_classes, 8))


class Classifier(nn.Module):
    """Backbone -> head. ``forward(x)`` returns ``(logits, z)``; for ``no_pen`` z is the backbone feature."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.variant not in VARIANTS:
            raise ValueError(f"unknown variant {cfg.variant!r}; expected one of {', '.join(VARIANTS)}")
        if cfg.backbone not in _BACKBONES:
            raise ValueError(
                f"unknown backbone {cfg.backbone!r}; expected one of {', '.join(available_backbones())}"
            )
        if cfg.variant != "no_pen" and cfg.latent_dim < min_latent_dim(cfg.num_classes):
            raise ValueError(
                f"latent_dim={cfg.latent_dim} is too small for {cfg.num_classes} classes: a binary code of d bits "
                f"has 2**d vertices, so d must be >= ceil(log2({cfg.num_classes})) = "
                f"{min_latent_dim(cfg.num_classes)}"
            )
        self.cfg = cfg
        c = cfg.input_shape[0]
        if len(cfg.mean) != c or len(cfg.std) != c:
            raise ValueError(f"mean/std need {c} values (one per channel), got {cfg.mean} / {cfg.std}")
        self.register_buffer("mean", torch.tensor(cfg.mean, dtype=torch.float32).view(1, c, 1, 1))
        self.register_buffer("std", torch.tensor(cfg.std, dtype=torch.float32).view(1, c, 1, 1))
        self.backbone, n_feat = _BACKBONES[cfg.backbone](cfg.input_shape)
        if cfg.variant == "no_pen":
            self.latent: nn.Module = nn.Identity()
            n_latent = n_feat
        elif cfg.variant == "nonlin_pen":
            self.latent = nn.Sequential(nn.Linear(n_feat, cfg.latent_dim), nn.SiLU())
            n_latent = cfg.latent_dim
        else:
            self.latent = nn.Linear(n_feat, cfg.latent_dim)
            n_latent = cfg.latent_dim
        self.classifier = nn.Linear(n_latent, cfg.num_classes)

    @property
    def latent_width(self) -> int:
        return self.classifier.in_features

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.backbone((x - self.mean) / self.std)
        z = self.latent(h)
        return self.classifier(z), z


def build_model(cfg: ModelConfig) -> Classifier:
    return Classifier(cfg)
