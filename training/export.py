"""Export a trained run to one self-contained ``model.onnx`` (the :mod:`serving.artifact` contract).

``python -m training.export runs/NAME [--register] [--target-accept-rate 0.95 | --target-risk ALPHA [--delta DELTA]
[--candidates K]] [--out PATH]``

Steps: rebuild the model; for ``bin_enc`` fit the :class:`~training.reliability.VertexGeometry` on the training
latents of correctly classified samples (other variants use max-softmax); wrap the model and its score module
(:mod:`training.score`, geometry as constant buffers) in one torch module; ``torch.onnx.export(dynamo=True)`` with a dynamic batch; embed every
initializer (no external data); ``onnx.checker``; run ONNX Runtime and PyTorch on the validation split (>= 256
samples) and require the same argmax everywhere and probs / reliability within 1e-5; calibrate the threshold on
the validation reliabilities the ONNX graph produces (two modes: ``--target-accept-rate`` accepts that share of the
validation split; ``--target-risk ALPHA`` takes the most permissive threshold whose selective error, errors among
accepted answers, is certified ``<= ALPHA`` with probability ``>= 1 - DELTA`` on a calibration part of the validation
split, :mod:`training.selective_risk`; nothing is written when none is); sign the metadata; write atomically (temp file +
``os.replace``: a failure or interruption leaves no file). ``--register`` also stores it in the BentoML model
store as ``binenc:<version>`` (the service loads ``binenc:latest``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from serving.artifact_format import canonical_json, read_metadata
from training.acceptance import check_acceptance_args, choose_threshold
from training.artifact_writer import ARTIFACT_NAME, artifact_metadata, register_artifact, write_signed
from training.checkpoint import CHECKPOINT, load_run
from training.collapse import refuse_collapsed
from training.data import DatasetNotFoundError, DatasetSplits, load_run_data
from training.jsonio import clean_json
from training.onnx_graph import ScoredModel, checked_graph, fit_score
from training.parity import ParityError
from training.reliability import GeometryError
from training.rundir import read_metrics

log = logging.getLogger(__name__)


def export_run(
    run_dir: str | Path,
    out: str | Path | None = None,
    target_accept_rate: float = 0.95,
    register: bool = False,
    data: DatasetSplits | None = None,
    sign_key: str | Path | None = None,
    target_risk: float | Sequence[float] | None = None,
    delta: float = 0.05,
    candidates: int = 1,
) -> Path:
    """Export ``run_dir`` to ``out`` (default ``run_dir/model.onnx``); returns the path written.
    ``sign_key``: an Ed25519 private key (PEM) that signs the artifact (:mod:`training.signing`).
    ``target_risk``: certify the selective error instead of a target accept rate, at ``delta``, Bonferroni over
    ``candidates`` models chosen among with the same validation data (:mod:`training.selective_risk`)."""
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / ARTIFACT_NAME
    check_acceptance_args(target_accept_rate, target_risk, delta, candidates)
    model, cfg, ckpt = load_run(run_dir)
    refuse_collapsed(read_metrics(run_dir))
    data = data or load_run_data(cfg)

    geometry = fit_score(model, data)
    scored = ScoredModel(model, geometry).eval()
    proto, got, parity = checked_graph(scored, model.cfg.input_shape, data)

    val_out = {k: v[: len(data.val)] for k, v in got.items()}
    threshold, acceptance, calibration = choose_threshold(
        val_out, data.val.labels, target_accept_rate, target_risk, delta, candidates
    )
    calibration["parity"] = clean_json(parity)

    classes = list(ckpt.get("classes") or data.classes)
    metadata = artifact_metadata(
        run_dir,
        model,
        scored,
        geometry,
        classes,
        ckpt.get("dataset", data.name),
        threshold,
        target_accept_rate if target_risk is None else None,
        acceptance,
        calibration,
    )
    signed = write_signed(proto, metadata, out, sign_key)
    log.info(
        "exported %s (score %s, threshold %.6g, val accept %.4f, checksum %s)",
        out,
        scored.score.name,
        threshold,
        calibration["accept_rate"],
        signed["checksum"],
    )
    if register:
        log.info("registered %s in the BentoML model store", register_artifact(out, signed))
    return out


def ensure_artifact(
    run_dir: str | Path, data: DatasetSplits | None = None, reexport: bool = False
) -> tuple[Path, bool]:
    """``run_dir/model.onnx``, exported (again) when missing, older than the checkpoint or ``reexport``; returns
    ``(path, exported_now)``."""
    run_dir = Path(run_dir)
    path, ckpt = run_dir / ARTIFACT_NAME, run_dir / CHECKPOINT
    if not reexport and path.is_file() and ckpt.is_file() and path.stat().st_mtime >= ckpt.stat().st_mtime:
        return path, False
    return export_run(run_dir, path, data=data), True


def risk_list(text: str) -> float | list[float]:
    """``ALPHA`` or ``ALPHA,ALPHA,...`` (argparse type)."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number or comma-separated numbers in (0, 1), got {text!r}"
        ) from None
    return values[0] if len(values) == 1 else values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.export",
        description=__doc__,
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", help="run directory with checkpoint.pt (and metrics.json)")
    p.add_argument("--out", help=f"output path (default RUN_DIR/{ARTIFACT_NAME})")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--target-accept-rate",
        type=float,
        default=0.95,
        help="share of validation inputs the calibrated threshold accepts (default 0.95)",
    )
    mode.add_argument(
        "--target-risk",
        type=risk_list,
        metavar="ALPHA",
        help="instead: the most permissive threshold whose selective error (errors among accepted "
        "answers) is certified <= ALPHA with probability >= 1 - DELTA (Learn then Test, exact "
        "binomial bound; exits 2 with the smallest certifiable risk when none is). A list "
        "(0.01,0.02,0.03): the smallest the selection part of the validation split supports",
    )
    p.add_argument(
        "--delta",
        type=float,
        help="with --target-risk: the probability that the guarantee fails (default 0.05)",
    )
    p.add_argument(
        "--candidates",
        type=int,
        help="with --target-risk: the number of models this one was chosen among "
        "with the same validation data; DELTA is split over them (Bonferroni; default 1)",
    )
    p.add_argument(
        "--register", action="store_true", help="also store it in the BentoML model store (binenc:latest)"
    )
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument(
        "--sign",
        metavar="PRIVATE_KEY",
        help="sign the artifact with this Ed25519 key (PEM; create a "
        "pair with `python -m training.signing keygen --out DIR`)",
    )
    return p


def cli_setup(threads: int | None) -> None:
    """What both export command lines do first: INFO logging without the ONNX exporter's chatter, torch threads."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("onnxscript", "torch.onnx", "torch.export", "onnx_ir"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if threads:
        torch.set_num_threads(threads)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--model" in argv or any(a.startswith("--model=") for a in argv):  # a classifier trained elsewhere
        from training.outside_export import main as export_outside_main

        return export_outside_main(argv)
    args = build_parser().parse_args(argv)
    cli_setup(args.threads)

    if args.target_risk is None and (args.delta is not None or args.candidates is not None):
        print("error: --delta and --candidates only apply with --target-risk ALPHA", file=sys.stderr)
        return 2
    try:
        path = export_run(
            args.run_dir,
            args.out,
            args.target_accept_rate,
            args.register,
            sign_key=args.sign,
            target_risk=args.target_risk,
            delta=0.05 if args.delta is None else args.delta,
            candidates=1 if args.candidates is None else args.candidates,
        )
    except (FileNotFoundError, DatasetNotFoundError, GeometryError, ParityError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)  # RiskNotCertifiable is a ValueError: one line, exit 2
        return 2
    md, _ = read_metadata(path)
    print(
        f"exported {path}: {md['variant']} score={md['score']['name']} threshold={md['threshold']:.6g} "
        f"val_accept={md['calibration']['accept_rate']:.4f} checksum={md['checksum']}"
    )
    if md["acceptance"]["mode"] == "risk":
        a = md["acceptance"]
        print(
            f"certified: {a['statement']}; calibration coverage {a['calibration_coverage']:.4f} of "
            f"{a['calibration_n']}, upper bound at the threshold {a['upper_bound_at_threshold']:.4f}"
        )
    print(canonical_json({"acceptance": md["acceptance"], "calibration": md["calibration"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
