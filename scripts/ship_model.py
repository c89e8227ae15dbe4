"""Regenerate the shipped reference model ``models/fashion-mnist_bin_enc/`` from a trained run.

    make model        # = train the default run if missing, then: python scripts/ship_model.py --target-risk ...

Exports ``RUN`` (default ``runs/fashion-mnist_cnn_quick_bin_enc_s1``, what ``make train`` writes) to
``models/fashion-mnist_bin_enc/model.onnx`` and writes ``provenance.json`` beside it: the commands, the code versions
of training and export, the artifact's sha256 and size, the acceptance rule (``--target-risk ALPHA --delta DELTA
--candidates K``: a certified selective error, :mod:`training.selective_risk`; else a 95% validation accept rate)
and the metrics from its signed metadata. ``docs/shipped-model.md`` says how the shipped run was chosen.
``tests/serving/test_shipped_model.py`` checks the file against it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import tempfile
from pathlib import Path

from serving.artifact_format import SCHEMA_VERSION, read_metadata
from serving.atomic_write import atomic_write_bytes
from training.export import export_run, risk_list
from training.rundir import CONFIG, METRICS
from training.version import code_version

DEFAULT_RUN = Path("runs/fashion-mnist_cnn_quick_bin_enc_s1")
DEFAULT_OUT = Path("models/fashion-mnist_bin_enc")
# The shipped model's acceptance rule (docs/shipped-model.md): ALPHA the smallest of these that the selection part of
# the validation split supports, DELTA 0.05, Bonferroni over the six candidates the shipped run was chosen among.
SHIPPED_TARGET_RISK = [0.01, 0.02, 0.03]
SHIPPED_DELTA = 0.05
SHIPPED_CANDIDATES = 6
TRAIN_COMMAND = (
    "python -m training --dataset fashion-mnist --variant bin_enc --profile quick --seed {seed} --out {run}"
)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export_flags(target_risk: float | list[float] | None, delta: float, candidates: int) -> str:
    """The acceptance flags of ``ship_model.py`` (empty for the default 95% accept rate)."""
    if target_risk is None:
        return ""
    risks = ",".join(f"{a:g}" for a in (target_risk if isinstance(target_risk, list) else [target_risk]))
    return f" --target-risk {risks} --delta {delta:g} --candidates {candidates}"


def provenance(run: Path, artifact: Path, flags: str = "") -> dict:
    """What a reader needs to trust and reproduce ``artifact``."""
    md, _ = read_metadata(artifact, verify=True)
    config = json.loads((run / CONFIG).read_text())
    return {
        "artifact": artifact.name,
        "sha256": sha256_of(artifact),
        "bytes": artifact.stat().st_size,
        "schema_version": md["schema_version"],
        "metadata_checksum": md["checksum"],
        "train_command": TRAIN_COMMAND.format(seed=config["train"]["seed"], run=run.as_posix()),
        "export_command": f"python scripts/ship_model.py --run {run.as_posix()}{flags}",
        "training_code_version": config.get("code_version", "not recorded by the run"),
        "export_code_version": md["code_version"],
        "created_at": md["created_at"],
        "train_config": config["train"],
        "threshold": md["threshold"],
        "target_accept_rate": md["target_accept_rate"],
        "acceptance": md.get("acceptance"),
        "training_metrics": md["training_metrics"],
        "calibration": {k: v for k, v in md["calibration"].items() if k != "parity"},
        "parity": md["calibration"].get("parity"),
    }


def ship(
    run: Path,
    out_dir: Path,
    target_risk: float | list[float] | None = None,
    delta: float = 0.05,
    candidates: int = 1,
) -> dict:
    """Export ``run`` into ``out_dir/model.onnx`` (atomically) and write ``out_dir/provenance.json``; with
    ``target_risk`` the threshold certifies the selective error (:func:`training.export.export_run`)."""
    if not (run / METRICS).is_file():
        raise FileNotFoundError(
            f"{run}: no finished run (metrics.json missing); train it first with `make train`"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        staged = export_run(
            run, Path(tmp) / "model.onnx", target_risk=target_risk, delta=delta, candidates=candidates
        )
        final = out_dir / "model.onnx"
        atomic_write_bytes(final, staged.read_bytes())
    record = provenance(run, final, export_flags(target_risk, delta, candidates))
    if (
        record["schema_version"] != SCHEMA_VERSION
    ):  # pragma: no cover - export always writes the current schema
        raise RuntimeError(f"exported schema v{record['schema_version']}, expected v{SCHEMA_VERSION}")
    atomic_write_bytes(out_dir / "provenance.json", (json.dumps(record, indent=2) + "\n").encode())
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    p.add_argument(
        "--run", type=Path, default=DEFAULT_RUN, help=f"trained run directory (default {DEFAULT_RUN})"
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"model directory (default {DEFAULT_OUT})")
    p.add_argument(
        "--target-risk",
        type=risk_list,
        metavar="ALPHA",
        default=SHIPPED_TARGET_RISK,
        help="certify the selective error <= ALPHA (python -m training.export --target-risk; default "
        f"{','.join(map(str, SHIPPED_TARGET_RISK))}: the smallest the selection part supports)",
    )
    p.add_argument("--delta", type=float, default=SHIPPED_DELTA, help=f"(default {SHIPPED_DELTA})")
    p.add_argument(
        "--candidates",
        type=int,
        default=SHIPPED_CANDIDATES,
        help="models the shipped one was chosen "
        f"among on the same validation data (Bonferroni; default {SHIPPED_CANDIDATES})",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        record = ship(args.run, args.out, args.target_risk, args.delta, args.candidates)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"shipped {args.out / 'model.onnx'}: sha256 {record['sha256']} ({record['bytes']} bytes), "
        f"test_acc {record['training_metrics'].get('test_acc')}, threshold {record['threshold']:.6g}, "
        f"code {code_version()}"
    )
    if record["acceptance"] and record["acceptance"]["mode"] == "risk":
        print(f"certified: {record['acceptance']['statement']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
