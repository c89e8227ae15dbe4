"""Training configuration, the named profiles (:data:`PROFILES`) and the allowed values of its free-string options.

Each option with a fixed set of values has a ``Literal`` type here (:data:`Variant`, :data:`LrSchedule`,
:data:`GammaPer`, :data:`AdvTrain`, :data:`AdvSelect`); :meth:`TrainConfig.validate` checks them once, when a
config is built, and ``python -m training`` offers exactly these values (:func:`choices`).

>>> cfg = make_config("quick", seed=3, epochs=5)
>>> (cfg.profile, cfg.seed, cfg.epochs, cfg.min_steps, cfg.lr_schedule)
('quick', 3, 5, 0, 'cosine')
>>> choices("lr_schedule")
('cosine', 'step', 'constant')
>>> make_config(lr_schedule="linear")
Traceback (most recent call last):
...
ValueError: unknown lr_schedule 'linear'; expected one of cosine, step, constant
"""

from __future__ import annotations

import typing
from dataclasses import asdict, dataclass, fields, replace
from typing import Literal

Variant = Literal["bin_enc", "lin_pen", "nonlin_pen", "no_pen"]
LrSchedule = Literal[
    "cosine", "step", "constant"
]  # step: x lr_step_factor every lr_step_every after lr_step_start
GammaPer = Literal["epoch", "step"]
AdvTrain = Literal[
    "fgsm", "nfgsm", "pgd"
]  # FGSM with a random start ("fast AT"), N-FGSM, PGD; L∞ in pixel space
AdvSelect = Literal["last", "robust"]  # robust: the full-gamma epoch with the best robust validation accuracy

# The options of TrainConfig that take one of a fixed set of values, and that set.
CHOICES: dict[str, tuple[str, ...]] = {
    "variant": typing.get_args(Variant),
    "lr_schedule": typing.get_args(LrSchedule),
    "gamma_per": typing.get_args(GammaPer),
    "adv_train": typing.get_args(AdvTrain),
    "adv_select": typing.get_args(AdvSelect),
}


def choices(option: str) -> tuple[str, ...]:
    """The values ``option`` (a :class:`TrainConfig` field) accepts (``adv_train`` may also be ``None``, off)."""
    return CHOICES[option]


@dataclass
class TrainConfig:
    """All knobs of one training run; saved beside the weights so a run can be rebuilt and resumed."""

    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    image_size: str | None = (
        None  # folder: "H" or "HxW" every image is resized to (None: the size they all have)
    )
    test_fraction: float = 0.2  # folder without train/ and test/: the share of each class held out for test
    val_fraction: float = 0.1
    backbone: str = "cnn"
    variant: Variant = "bin_enc"
    latent_dim: int | None = (
        None  # None: training.models.default_latent_dim(number of classes), 8 for 10 classes
    )
    seed: int = 0
    epochs: int = 20
    min_steps: int = (
        0  # raise epochs so that training takes at least this many optimiser steps (training.optim)
    )
    batch_size: int = 128
    lr: float = 1e-3
    lr_min: float = 1e-5
    lr_schedule: LrSchedule = "cosine"
    lr_step_start: int = 250
    lr_step_every: int = 50
    lr_step_factor: float = 0.5
    head_lr: float = 1e-3  # output layer: constant learning rate (the authors do this on purpose)
    weight_decay: float = 5e-4
    head_weight_decay: float = 5e-4
    gamma0: float = 0.01
    gamma_factor: float = 1.05
    gamma_cap: float = 1e6
    gamma_per: GammaPer = "epoch"
    gamma_ramp: float | None = (
        None  # if set: factor chosen so gamma reaches the cap at this fraction of training
    )
    augment_shift: int = 0  # random translation of up to this many pixels per training image (0 = off)
    adv_train: AdvTrain | None = None  # None: off
    adv_eps: float = 0.1  # L∞ radius of the training adversary, in [0, 1] pixel units (N-FGSM reaches 3·eps)
    adv_steps: int = 7  # PGD steps (step size 2.5·eps/steps); FGSM: one step of 1.25·eps from a random start
    adv_check: int = (
        512  # validation images attacked by PGD-10 at adv_eps after every epoch of adversarial training
    )
    adv_select: AdvSelect = "last"
    device: str = "cpu"
    num_threads: int | None = None
    profile: str | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` when an option of :data:`CHOICES` holds a value outside its set."""
        for name, allowed in CHOICES.items():
            value = getattr(self, name)
            if value not in allowed and not (name == "adv_train" and value is None):
                raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(allowed)}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @property
    def penalised(self) -> bool:
        """Only ``bin_enc`` gets the compression loss."""
        return self.variant == "bin_enc"


PROFILES: dict[str, dict] = {
    # The authors' v4 recipe, for GPUs.
    "paper": dict(
        epochs=800,
        batch_size=128,
        lr=1e-3,
        lr_schedule="step",
        lr_step_start=250,
        lr_step_every=50,
        lr_step_factor=0.5,
        head_lr=1e-3,
        weight_decay=5e-4,
        head_weight_decay=5e-4,
        gamma0=0.01,
        gamma_factor=1.05,
        gamma_cap=1e6,
        gamma_per="epoch",
        gamma_ramp=None,
    ),
    # Compressed schedule found empirically for Fashion-MNIST + cnn on 2 CPU cores (research/quick-profile.md).
    # min_steps: a small dataset trains for more epochs, so that gamma never ramps faster than over 1,500 optimiser
    # steps (Fashion-MNIST: 20 epochs of 422 steps, unchanged; README, "Train on your own images").
    "quick": dict(
        epochs=20,
        batch_size=128,
        lr=1e-3,
        lr_min=1e-5,
        lr_schedule="cosine",
        head_lr=1e-3,
        weight_decay=5e-4,
        head_weight_decay=5e-4,
        gamma0=0.01,
        gamma_cap=1e2,
        gamma_per="step",
        gamma_ramp=0.5,
        min_steps=3000,
    ),
    # The paper's schedule shape at CPU scale (research/sweep.md): gamma grown once per epoch up to the low end of the
    # paper's range, 1e4 (reached half-way; 1e6 collapses to chance at this length), constant output-layer LR, three
    # times the quick length (~60 min on 2 CPU cores).
    "long": dict(
        epochs=60,
        batch_size=128,
        lr=1e-3,
        lr_min=1e-5,
        lr_schedule="cosine",
        head_lr=1e-3,
        weight_decay=5e-4,
        head_weight_decay=5e-4,
        gamma0=0.01,
        gamma_cap=1e4,
        gamma_per="epoch",
        gamma_ramp=0.5,
    ),
}


def make_config(profile: str | None = None, **overrides) -> TrainConfig:
    """A :class:`TrainConfig` from a named profile plus explicit overrides (``None`` values are ignored). Given
    ``epochs`` (and no ``min_steps``), the run trains exactly that many epochs.

    >>> make_config("paper").lr_schedule, make_config("paper", epochs=10).epochs
    ('step', 10)
    """
    cfg = TrainConfig()
    if profile is not None:
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(sorted(PROFILES))}")
        cfg = replace(cfg, profile=profile, **PROFILES[profile])
    return with_overrides(cfg, **overrides)


def with_overrides(cfg: TrainConfig, **overrides) -> TrainConfig:
    """``cfg`` with the given settings (``None`` values are ignored); an explicit ``epochs`` without ``min_steps``
    is trained exactly (``min_steps=0``)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if "epochs" in given and "min_steps" not in given:
        given["min_steps"] = 0
    return replace(cfg, **given)
