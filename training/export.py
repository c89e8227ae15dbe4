"""Export a trained run to one self-contained ``model.onnx`` (the :mod:`serving.artifact_format` contract).

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
import datetime as dt
import logging
import math
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from serving.artifact_format import (
    INPUT_NAME,
    OUTPUT_NAMES,
    SCHEMA_VERSION,
    canonical_json,
    read_metadata,
    sign_metadata,
)
from serving.atomic_write import atomic_write_bytes
from training.calibration import calibrate_threshold, calibration_summary
from training.checkpoint import CHECKPOINT, load_run
from training.collapse import refuse_collapsed
from training.data import DatasetNotFoundError, DatasetSplits, load_run_data
from training.inference import forward_batches
from training.jsonio import clean_json
from training.models import Classifier
from training.parity import ParityError, check_parity, ort_outputs, parity_images, torch_outputs
from training.reliability import GeometryError, VertexGeometry
from training.rundir import read_metrics
from training.score import score_definition, score_module
from training.selective_risk import (
    RiskNotCertifiable,
    certify,
    choose_alpha,
    risk_summary,
    sequence_start,
    split_validation,
)
from training.signing import sign_model
from training.version import code_version

log = logging.getLogger(__name__)

ARTIFACT_NAME = "model.onnx"
BENTO_MODEL_NAME = "binenc"
OPSET = 18


class ScoredModel(nn.Module):
    """Classifier + score module: ``pixels -> OUTPUT_NAMES`` (what the ONNX graph computes).

    ``model(pixels) -> (logits, z)``; then ``probs = softmax(logits)`` and the outputs of
    :func:`training.score.score_module` (the vertex score with a geometry, max-softmax without one).
    """

    def __init__(self, model: Classifier, geometry: VertexGeometry | None):
        super().__init__()
        self.model = model
        self.score = score_module(geometry)

    def forward(self, pixels: torch.Tensor):
        logits, z = self.model(pixels)
        return (logits, torch.softmax(logits, dim=1), z, *self.score(logits, z))


# --------------------------------------------------------------------------- pieces
def fit_score(model: Classifier, data: DatasetSplits) -> VertexGeometry | None:
    """The vertex geometry for ``bin_enc`` (fitted on the training split), ``None`` (max-softmax) otherwise."""
    if model.cfg.variant != "bin_enc":
        return None
    logits, z = forward_batches(model, data.train.images)
    return VertexGeometry.fit(
        z, logits.argmax(1), data.train.labels, classes=list(data.classes), num_classes=data.num_classes
    )


def to_onnx(scored: ScoredModel, input_shape: tuple[int, int, int]) -> onnx.ModelProto:
    """Export with a dynamic batch dimension and every initializer embedded."""
    scored.eval()
    example = torch.rand(2, *input_shape)
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        program = torch.onnx.export(
            scored,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes={"pixels": {0: batch}},
            opset_version=OPSET,
            optimize=True,
            verbose=False,
        )
    model = program.model_proto
    # Make sure nothing lives in external data: round-trip through bytes with everything inline.
    for init in model.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            raise RuntimeError(f"initializer {init.name} was exported as external data; expected it embedded")
    return model


def training_summary(run_dir: Path) -> dict:
    """The headline numbers of ``metrics.json`` (accuracies, geometry) for the metadata."""
    m = read_metrics(run_dir)
    out = {
        k: m[k] for k in ("train_acc", "val_acc", "test_acc", "bimodal_dims", "all_dims_bimodal") if k in m
    }
    for split in ("train", "val", "test"):
        s = m.get(split)
        if isinstance(s, dict):
            out[split] = {
                k: s[k] for k in ("same_encoding", "distinct_class_codes", "nc1", "sigma_w_rel") if k in s
            }
    return clean_json(out)


def register_artifact(path: Path, metadata: dict) -> str:
    """Store ``path`` in the BentoML model store as ``binenc:<version>``; returns the tag."""
    import shutil

    import bentoml

    labels = {
        "dataset": metadata["dataset"],
        "variant": metadata["variant"],
        "score": metadata["score"]["name"],
    }
    meta = {
        "schema_version": metadata["schema_version"],
        "name": metadata["name"],
        "checksum": metadata["checksum"],
        "threshold": metadata["threshold"],
        "target_accept_rate": metadata["target_accept_rate"],
        "acceptance_mode": metadata["acceptance"]["mode"],
        "classes": metadata["classes"],
        "input_shape": metadata["input"]["shape"],
        "backbone": metadata["backbone"],
        "code_version": metadata["code_version"],
        "created_at": metadata["created_at"],
        "artifact": ARTIFACT_NAME,
    }
    with bentoml.models.create(BENTO_MODEL_NAME, labels=labels, metadata=meta) as m:
        shutil.copyfile(path, Path(m.path) / ARTIFACT_NAME)
    return str(m.tag)


def risk_controlled_threshold(
    val_out: dict[str, np.ndarray],
    labels: np.ndarray,
    alpha: float | Sequence[float],
    delta: float,
    candidates: int,
) -> tuple[float, dict, dict]:
    """``(threshold, acceptance, calibration summary)`` of the most permissive threshold certified at ``alpha``
    (:func:`training.selective_risk.certify` at ``delta / candidates``); raises :class:`RiskNotCertifiable`.
    Several ``alpha``: the smallest at or above the selection part's smallest certifiable risk
    (:func:`training.selective_risk.choose_alpha`; the calibration points play no part in the choice)."""
    sel, cal = split_validation(len(labels))
    rel = val_out["reliability"]
    wrong = val_out["logits"].argmax(1) != labels
    alphas = sorted(alpha) if isinstance(alpha, Sequence) else [float(alpha)]
    if len(alphas) > 1:
        alpha = choose_alpha(alphas, sequence_start(rel[sel], wrong[sel], delta / candidates)[2])
    else:
        alpha = alphas[0]
    cert = certify(rel[sel], wrong[sel], rel[cal], wrong[cal], alpha, delta / candidates)
    if cert.index is None:
        smallest = math.ceil(cert.smallest_certifiable * 1e4) / 1e4
        by = f", Bonferroni over {candidates} candidate models" if candidates > 1 else ""
        raise RiskNotCertifiable(
            f"no threshold certifies a selective error <= {alpha:g} with probability >= {1 - delta:g} on "
            f"{len(cal)} calibration points{by}; the smallest certifiable risk is {smallest:.4f} "
            f"(pass --target-risk {smallest:.4f} or more)"
        )
    acceptance = risk_summary(cert, alpha, delta, candidates, len(sel))
    if len(alphas) > 1:
        acceptance["alpha_candidates"] = alphas
        acceptance["alpha_rule"] = (
            "the smallest candidate at or above the selection part's smallest certifiable "
            "risk (chosen without the calibration points)"
        )
    calibration = calibration_summary(
        {k: v[cal] for k, v in val_out.items()}, labels[cal], cert.threshold, split="val (calibration part)"
    )
    return cert.threshold, acceptance, calibration


def choose_threshold(
    val_out: dict[str, np.ndarray],
    labels: np.ndarray,
    target_accept_rate: float,
    target_risk: float | Sequence[float] | None,
    delta: float,
    candidates: int,
) -> tuple[float, dict, dict]:
    """``(threshold, acceptance, calibration summary)`` on the validation outputs of the graph: the threshold
    accepting ``target_accept_rate`` of them, or with ``target_risk`` :func:`risk_controlled_threshold`'s."""
    if target_risk is not None:
        return risk_controlled_threshold(val_out, labels, target_risk, delta, candidates)
    threshold = calibrate_threshold(val_out["reliability"], target_accept_rate)
    calibration = calibration_summary(val_out, labels, threshold)
    calibration["target_accept_rate"] = target_accept_rate
    return threshold, {"mode": "accept_rate", "target_accept_rate": target_accept_rate}, calibration


def _check_acceptance_args(
    target_accept_rate: float, target_risk: float | Sequence[float] | None, delta: float, candidates: int
) -> None:
    if not 0.0 < target_accept_rate < 1.0:
        raise ValueError(f"target_accept_rate must be in (0, 1), got {target_accept_rate}")
    risks = list(target_risk) if isinstance(target_risk, Sequence) else [target_risk]
    if target_risk is not None and not (risks and all(0.0 < a < 1.0 for a in risks) and 0.0 < delta < 1.0):
        raise ValueError(f"expected --target-risk and --delta in (0, 1), got {target_risk} and {delta}")
    if not (isinstance(candidates, int) and candidates >= 1):
        raise ValueError(f"expected --candidates to be a whole number >= 1, got {candidates}")


# --------------------------------------------------------------------------- the export
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
    _check_acceptance_args(target_accept_rate, target_risk, delta, candidates)
    model, cfg, ckpt = load_run(run_dir)
    refuse_collapsed(read_metrics(run_dir))
    data = data or load_run_data(cfg)

    geometry = fit_score(model, data)
    scored = ScoredModel(model, geometry).eval()
    proto = to_onnx(scored, model.cfg.input_shape)
    onnx.checker.check_model(proto, full_check=True)
    graph_bytes = proto.SerializeToString()

    images, parity_source = parity_images(data)
    ref = torch_outputs(scored, images)
    got = ort_outputs(graph_bytes, images)
    parity = check_parity(ref, got)
    parity["source"] = parity_source

    val_out = {k: v[: len(data.val)] for k, v in got.items()}
    threshold, acceptance, calibration = choose_threshold(
        val_out, data.val.labels, target_accept_rate, target_risk, delta, candidates
    )
    calibration["parity"] = clean_json(parity)

    classes = list(ckpt.get("classes") or data.classes)
    metadata = _metadata(
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


def _metadata(
    run_dir: Path,
    model: Classifier,
    scored: ScoredModel,
    geometry: VertexGeometry | None,
    classes: list[str],
    dataset: str,
    threshold: float,
    target_accept_rate: float | None,
    acceptance: dict,
    calibration: dict,
) -> dict:
    """The artifact's metadata (:mod:`serving.artifact_format`'s schema), before it is signed."""
    mc = model.cfg
    geo_md, codebook = geometry.to_metadata() if geometry is not None else (None, {})
    score = {
        "name": scored.score.name,
        "direction": "higher = more reliable",
        "definition": score_definition(scored.score),
    }
    return clean_json(
        {
            "schema_version": SCHEMA_VERSION,
            "name": run_dir.resolve().name,
            "classes": classes,
            "input": {
                "shape": list(mc.input_shape),
                "layout": "NCHW",
                "dtype": "float32",
                "pixel_range": [0, 1],
                "normalisation": {"mean": list(mc.mean), "std": list(mc.std), "applied_in_graph": True},
            },
            "outputs": list(OUTPUT_NAMES),
            "variant": mc.variant,
            "dataset": dataset,
            "backbone": mc.backbone,
            "latent_dim": int(model.latent_width),
            "score": score,
            "threshold": threshold,
            "target_accept_rate": target_accept_rate,
            "acceptance": acceptance,
            "geometry": geo_md,
            "codebook": codebook,
            "training_metrics": training_summary(run_dir),
            "calibration": calibration,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "code_version": code_version(),
            "opset": OPSET,
        }
    )


def write_signed(proto: onnx.ModelProto, metadata: dict, out: Path, sign_key: str | Path | None) -> dict:
    """Embed the signed ``metadata`` (and an Ed25519 signature with ``sign_key``), check that the bytes load back,
    and write ``out`` atomically; returns the signed metadata."""
    signed = sign_metadata(proto, metadata)
    if sign_key is not None:
        log.info("signed with key id %s", sign_model(proto, sign_key))
    payload = proto.SerializeToString()
    _verify_bytes(payload, out)
    atomic_write_bytes(out, payload)
    return signed


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


def _verify_bytes(payload: bytes, out: Path) -> None:
    """The bytes about to be written must load back with a valid checksum (checked in a temp file)."""
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp:
        p = Path(tmp) / out.name
        p.write_bytes(payload)
        read_metadata(p, verify=True)


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
