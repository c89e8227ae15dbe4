"""Regenerate the shipped reference model ``models/fashion-mnist_bin_enc/`` from a trained run.

    make model        # = train the default run if missing, then: python scripts/ship_model.py

Exports ``RUN`` (default ``runs/fashion-mnist_cnn_quick_bin_enc_s0``, what ``make train`` writes) to
``models/fashion-mnist_bin_enc/model.onnx`` and writes ``provenance.json`` beside it: the commands, the code versions
of training and export, the artifact's sha256 and size, and the metrics from its signed metadata.
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

from serving.artifact import SCHEMA_VERSION, atomic_write_bytes, read_metadata
from training.export import export_run
from training.version import code_version

DEFAULT_RUN = Path("runs/fashion-mnist_cnn_quick_bin_enc_s0")
DEFAULT_OUT = Path("models/fashion-mnist_bin_enc")
TRAIN_COMMAND = "python -m training --dataset fashion-mnist --variant bin_enc --profile quick --out {run}"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def provenance(run: Path, artifact: Path) -> dict:
    """What a reader needs to trust and reproduce ``artifact``."""
    md, _ = read_metadata(artifact, verify=True)
    config = json.loads((run / "config.json").read_text())
    return {
        "artifact": artifact.name,
        "sha256": sha256_of(artifact),
        "bytes": artifact.stat().st_size,
        "schema_version": md["schema_version"],
        "metadata_checksum": md["checksum"],
        "train_command": TRAIN_COMMAND.format(run=run.as_posix()),
        "export_command": f"python scripts/ship_model.py --run {run.as_posix()}",
        "training_code_version": config.get("code_version", "not recorded by the run"),
        "export_code_version": md["code_version"],
        "created_at": md["created_at"],
        "train_config": config["train"],
        "threshold": md["threshold"],
        "target_accept_rate": md["target_accept_rate"],
        "training_metrics": md["training_metrics"],
        "calibration": {k: v for k, v in md["calibration"].items() if k != "parity"},
        "parity": md["calibration"].get("parity"),
    }


def ship(run: Path, out_dir: Path) -> dict:
    """Export ``run`` into ``out_dir/model.onnx`` (atomically) and write ``out_dir/provenance.json``."""
    if not (run / "metrics.json").is_file():
        raise FileNotFoundError(f"{run}: no finished run (metrics.json missing); train it first with `make train`")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        staged = export_run(run, Path(tmp) / "model.onnx")
        final = out_dir / "model.onnx"
        atomic_write_bytes(final, staged.read_bytes())
    record = provenance(run, final)
    if record["schema_version"] != SCHEMA_VERSION:  # pragma: no cover - export always writes the current schema
        raise RuntimeError(f"exported schema v{record['schema_version']}, expected v{SCHEMA_VERSION}")
    atomic_write_bytes(out_dir / "provenance.json", (json.dumps(record, indent=2) + "\n").encode())
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--run", type=Path, default=DEFAULT_RUN, help=f"trained run directory (default {DEFAULT_RUN})")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"model directory (default {DEFAULT_OUT})")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        record = ship(args.run, args.out)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"shipped {args.out / 'model.onnx'}: sha256 {record['sha256']} ({record['bytes']} bytes), "
          f"test_acc {record['training_metrics'].get('test_acc')}, threshold {record['threshold']:.6g}, "
          f"code {code_version()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
