"""Training configuration and the named profiles (``paper`` and ``quick``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace


@dataclass
class TrainConfig:
    """All knobs of one training run; saved beside the weights so a run can be rebuilt and resumed."""

    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    image_size: str | None = None  # folder: "H" or "HxW" every image is resized to (None: the size they all have)
    test_fraction: float = 0.2  # folder without train/ and test/: the share of each class held out for test
    val_fraction: float = 0.1
    backbone: str = "cnn"
    variant: str = "bin_enc"
    latent_dim: int | None = None  # None: training.models.default_latent_dim(number of classes), 8 for 10 classes
    seed: int = 0
    epochs: int = 20
    min_steps: int = 0  # raise epochs so that training takes at least this many optimiser steps (training.optim)
    batch_size: int = 128
    lr: float = 1e-3
    lr_min: float = 1e-5
    lr_schedule: str = "cosine"  # "cosine" | "step" (paper: x lr_step_factor every lr_step_every after lr_step_start)
    lr_step_start: int = 250
    lr_step_every: int = 50
    lr_step_factor: float = 0.5
    head_lr: float = 1e-3  # output layer: constant learning rate (the authors do this on purpose)
    weight_decay: float = 5e-4
    head_weight_decay: float = 5e-4
    gamma0: float = 0.01
    gamma_factor: float = 1.05
    gamma_cap: float = 1e6
    gamma_per: str = "epoch"  # "epoch" | "step"
    gamma_ramp: float | None = None  # if set: factor chosen so gamma reaches the cap at this fraction of training
    augment_shift: int = 0  # random translation of up to this many pixels per training image (0 = off)
    adv_train: str | None = None  # None | "fgsm" (random start, "fast AT") | "nfgsm" (N-FGSM) | "pgd"; L∞, pixels
    adv_eps: float = 0.1  # L∞ radius of the training adversary, in [0, 1] pixel units (N-FGSM reaches 3·eps)
    adv_steps: int = 7  # PGD steps (step size 2.5·eps/steps); FGSM: one step of 1.25·eps from a random start
    adv_check: int = 512  # validation images attacked by PGD-10 at adv_eps after every epoch of adversarial training
    adv_select: str = "last"  # "last" | "robust": keep the full-gamma epoch with the best robust validation accuracy
    device: str = "cpu"
    num_threads: int | None = None
    profile: str | None = None

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
        epochs=800, batch_size=128, lr=1e-3, lr_schedule="step", lr_step_start=250, lr_step_every=50,
        lr_step_factor=0.5, head_lr=1e-3, weight_decay=5e-4, head_weight_decay=5e-4,
        gamma0=0.01, gamma_factor=1.05, gamma_cap=1e6, gamma_per="epoch", gamma_ramp=None,
    ),
    # Compressed schedule found empirically for Fashion-MNIST + cnn on 2 CPU cores (research/quick-profile.md).
    # min_steps: a small dataset trains for more epochs, so that gamma never ramps faster than over 1,500 optimiser
    # steps (Fashion-MNIST: 20 epochs of 422 steps, unchanged; README, "Train on your own images").
    "quick": dict(
        epochs=20, batch_size=128, lr=1e-3, lr_min=1e-5, lr_schedule="cosine", head_lr=1e-3,
        weight_decay=5e-4, head_weight_decay=5e-4,
        gamma0=0.01, gamma_cap=1e2, gamma_per="step", gamma_ramp=0.5, min_steps=3000,
    ),
    # The paper's schedule shape at CPU scale (research/sweep.md): gamma grown once per epoch up to the low end of the
    # paper's range, 1e4 (reached half-way; 1e6 collapses to chance at this length), constant output-layer LR, three
    # times the quick length (~60 min on 2 CPU cores).
    "long": dict(
        epochs=60, batch_size=128, lr=1e-3, lr_min=1e-5, lr_schedule="cosine", head_lr=1e-3,
        weight_decay=5e-4, head_weight_decay=5e-4,
        gamma0=0.01, gamma_cap=1e4, gamma_per="epoch", gamma_ramp=0.5,
    ),
}


def make_config(profile: str | None = None, **overrides) -> TrainConfig:
    """A :class:`TrainConfig` from a named profile plus explicit overrides (``None`` values are ignored). Given
    ``epochs`` (and no ``min_steps``), the run trains exactly that many epochs."""
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
