"""Export a classifier trained elsewhere with a post-hoc reliability score, in the same signed artifact contract.

``python -m training.export --model PKG.MODULE:FACTORY --weights FILE --dataset NAME --out DIR
[--feature-layer NAME] [--target-accept-rate 0.95] [--register]``

The model is loaded by :func:`training.outside.load_outside` (``(logits, z)`` with ``z`` the feature layer); the
score is the whitened distance of ``z`` to the predicted class's centre (``mahalanobis`` of
:mod:`training.posthoc`: class means and tied within-class whitening of the correctly classified *training*
features, served as the ``vertex_distance`` outputs over an identity hypercube). The graph, the ONNX Runtime /
PyTorch parity check, the threshold (calibrated on the *validation* reliabilities the graph produces), the signed
metadata and the atomic write are those of :mod:`training.export`; the metadata's ``variant`` is ``outside`` and
its ``score.posthoc`` names the score and the feature layer, so the served model card says which score it carries.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from serving.artifact_format import OUTPUT_NAMES, SCHEMA_VERSION, read_metadata
from training.artifact_writer import ARTIFACT_NAME, register_artifact, write_signed
from training.calibration import calibrate_threshold, calibration_summary
from training.data import DatasetNotFoundError, DatasetSplits, load_dataset
from training.export import cli_setup
from training.inference import forward_batches
from training.jsonio import clean_json
from training.onnx_graph import OPSET, checked_graph
from training.outside import FeatureModel, OutsideModelError, load_outside
from training.parity import ParityError
from training.posthoc import FeatureScored, latent_mahalanobis_geometry
from training.reliability import GeometryError, VertexGeometry
from training.score import score_module
from training.version import code_version

log = logging.getLogger(__name__)

POSTHOC_SCORE = "mahalanobis"
POSTHOC_DEFINITION = (
    "whitened distance of the feature vector z to the predicted class's centre: reliability = "
    "exp(-sqrt(|(z - centres[pred]) @ whiten|^2 / d)), centres = class means and whiten @ whiten.T = "
    "inverse tied within-class covariance of the correctly classified training features; "
    "higher = more reliable"
)


def describe_layer(model: FeatureModel) -> str:
    return f"{model.reads} of {model.feature_layer!r}"


def export_outside(
    spec: str,
    weights: str | Path,
    data: DatasetSplits,
    out: str | Path,
    feature_layer: str | None = None,
    target_accept_rate: float = 0.95,
    register: bool = False,
    sign_key: str | Path | None = None,
    model: FeatureModel | None = None,
) -> Path:
    """Export ``spec`` + ``weights`` with the post-hoc score to ``out`` (a directory: ``out/model.onnx``, or a
    ``.onnx`` path); returns the path written. ``model``: the already loaded model (else loaded here)."""
    if not 0.0 < target_accept_rate < 1.0:
        raise ValueError(f"target_accept_rate must be in (0, 1), got {target_accept_rate}")
    out = Path(out)
    out = out if out.suffix == ".onnx" else out / ARTIFACT_NAME
    out.parent.mkdir(parents=True, exist_ok=True)
    model = model or load_outside(spec, weights, data.input_shape, data.num_classes, feature_layer)
    logits, z = forward_batches(model, data.train.images, 512)
    geometry = latent_mahalanobis_geometry(
        z, logits.argmax(1), data.train.labels, data.num_classes, list(data.classes)
    )
    score = score_module(geometry)
    scored = FeatureScored(model, score).eval()
    proto, got, parity = checked_graph(scored, data.input_shape, data)
    val_out = {k: v[: len(data.val)] for k, v in got.items()}
    threshold = calibrate_threshold(val_out["reliability"], target_accept_rate)
    calibration = calibration_summary(val_out, data.val.labels, threshold)
    calibration.update(target_accept_rate=target_accept_rate, parity=clean_json(parity))
    metadata = outside_metadata(
        spec,
        weights,
        data,
        model,
        int(z.shape[1]),
        geometry,
        score.name,
        threshold,
        target_accept_rate,
        calibration,
    )
    signed = write_signed(proto, metadata, out, sign_key)
    log.info(
        "exported %s (post-hoc %s on the %s, threshold %.6g, val accept %.4f, checksum %s)",
        out,
        POSTHOC_SCORE,
        describe_layer(model),
        threshold,
        calibration["accept_rate"],
        signed["checksum"],
    )
    if register:
        log.info("registered %s in the BentoML model store", register_artifact(out, signed))
    return out


def outside_metadata(
    spec: str,
    weights: str | Path,
    data: DatasetSplits,
    model: FeatureModel,
    latent_dim: int,
    geometry: VertexGeometry,
    score_name: str,
    threshold: float,
    target_accept_rate: float,
    calibration: dict,
) -> dict:
    """The artifact's metadata (:mod:`serving.artifact_format`'s schema) for an outside model, before it is signed:
    ``variant`` ``outside``, ``score.posthoc`` naming the score and the feature layer."""
    geo_md, codebook = geometry.to_metadata()
    return clean_json(
        {
            "schema_version": SCHEMA_VERSION,
            "name": f"{Path(str(weights)).stem}",
            "classes": list(data.classes),
            "input": {
                "shape": list(data.input_shape),
                "layout": "NCHW",
                "dtype": "float32",
                "pixel_range": [0, 1],
                "normalisation": {"applied_in_graph": True, "note": "whatever the model's own forward does"},
            },
            "outputs": list(OUTPUT_NAMES),
            "variant": "outside",
            "dataset": data.name,
            "backbone": spec,
            "latent_dim": latent_dim,
            "score": {
                "name": score_name,
                "direction": "higher = more reliable",
                "definition": POSTHOC_DEFINITION,
                "posthoc": {
                    "score": POSTHOC_SCORE,
                    "feature_layer": describe_layer(model),
                    "fitted_on": f"train ({len(data.train)}, correctly classified)",
                    "threshold_on": f"val ({len(data.val)})",
                    "outputs": "dist_class_centre and reliability carry the score; the vertex outputs "
                    "(nearest_vertex_class, dist_*_vertex) are those of an identity hypercube "
                    "and have no meaning for this model",
                },
            },
            "threshold": threshold,
            "target_accept_rate": target_accept_rate,
            "geometry": geo_md,
            "codebook": codebook,
            "training_metrics": {},
            "calibration": calibration,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "code_version": code_version(),
            "opset": OPSET,
        }
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.export --model",
        description=__doc__,
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model",
        required=True,
        metavar="PKG.MODULE:FACTORY",
        help="factory returning an nn.Module that maps [0, 1] images to logits",
    )
    p.add_argument("--weights", required=True, help="the model's state dict (torch.save(model.state_dict()))")
    p.add_argument(
        "--dataset", required=True, help="dataset the model was trained on (fashion-mnist, mnist, ...)"
    )
    p.add_argument("--data-dir", help="dataset directory (see `python -m training --help`)")
    p.add_argument(
        "--out", required=True, help=f"output directory (writes DIR/{ARTIFACT_NAME}) or .onnx path"
    )
    p.add_argument(
        "--feature-layer",
        help="module whose output is the feature layer (default: the input of the last nn.Linear)",
    )
    p.add_argument("--val-fraction", type=float, default=0.1, help="validation share of the training set")
    p.add_argument("--seed", type=int, default=0, help="seed of the validation split")
    p.add_argument(
        "--target-accept-rate",
        type=float,
        default=0.95,
        help="share of validation inputs the calibrated threshold accepts",
    )
    p.add_argument(
        "--register", action="store_true", help="also store it in the BentoML model store (binenc:latest)"
    )
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--sign", metavar="PRIVATE_KEY", help="sign the artifact with this Ed25519 key (PEM)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli_setup(args.threads)
    try:
        data = load_dataset(args.dataset, args.data_dir, args.val_fraction, args.seed)
        path = export_outside(
            args.model,
            args.weights,
            data,
            args.out,
            args.feature_layer,
            args.target_accept_rate,
            args.register,
            args.sign,
        )
    except (
        OutsideModelError,
        FileNotFoundError,
        DatasetNotFoundError,
        GeometryError,
        ParityError,
        ValueError,
    ) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    md, _ = read_metadata(path)
    print(
        f"exported {path}: outside model, score {md['score']['posthoc']['score']} on the "
        f"{md['score']['posthoc']['feature_layer']}, threshold={md['threshold']:.6g} "
        f"val_accept={md['calibration']['accept_rate']:.4f} checksum={md['checksum']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
