"""The bench's configuration, :class:`BenchConfig` (its budget profiles: :mod:`robustness.profiles`; its command
line: :mod:`robustness.bench_cli`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from robustness.adversarial import AdversarialPlan
from robustness.ood_sets import ALL_SETS
from robustness.profiles import Profile


@dataclass
class BenchConfig:
    dataset: str = "fashion-mnist"
    backbone: str = "cnn"
    profile: Profile = "quick"  # the runs' training profile and the bench's budgets (BENCH_PROFILES)
    variants: tuple[str, ...] = ("bin_enc", "no_pen", "lin_pen", "nonlin_pen")
    seeds: tuple[int, ...] = (0,)
    all_seeds: bool = False  # every seed with a finished run in runs_dir (thorough mode)
    thorough: bool = False
    runs: tuple[str, ...] = ()  # explicit run directories: evaluated as they are (no config matching)
    models: tuple[str, ...] = ()  # classifiers trained elsewhere: PKG.MODULE:FACTORY (robustness.outside)
    weights: tuple[str, ...] = ()  # their state dicts, one per model
    feature_layers: tuple[str, ...] = ()  # their feature layers ("" = the input of the last nn.Linear)
    onnx: tuple[
        str, ...
    ] = ()  # classifiers given only as ONNX graphs: black-box figures (robustness.onnx_bench)
    onnx_input_shape: tuple[int, int, int] | None = None  # (C, H, W) where the graph leaves it symbolic
    onnx_output: str | None = None  # the graph's logits output (default: "logits", else its only output)
    runs_dir: str = "runs"
    data_dir: str | None = None
    ood_data_dir: str | None = None
    out: str = "bench_out"
    device: str = "cpu"
    threads: int | None = None
    seed: int = 0  # bench seed: sample selection, attack randomness, OOD generation
    n_id: int = 2000  # ID test points for OOD / misclassification / calibration
    n_ood: int = 1000  # points per OOD set
    n_fit: int = (
        5000  # training points the Mahalanobis / KNN detectors (and the ablation's reject option) fit on
    )
    knn_k: int = 10
    ood_sets: tuple[str, ...] = ALL_SETS
    train_missing: bool = True
    adversarial: AdversarialPlan = field(default_factory=AdversarialPlan)
    progress: bool = True
    command: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["adversarial"] = self.adversarial.to_dict()
        for k in ("variants", "seeds", "runs", "ood_sets", "models", "weights", "feature_layers", "onnx"):
            d[k] = list(d[k])
        d["onnx_input_shape"] = list(self.onnx_input_shape) if self.onnx_input_shape else None
        return d


def relative_path(arg: str) -> str:
    """An absolute path under the working directory written relative to it (reports hold no machine paths)."""
    p = Path(arg)
    if p.is_absolute() and p.resolve().is_relative_to(Path.cwd().resolve()):
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    return arg
