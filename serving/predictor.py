"""The model behind every route: an opened artifact plus the response format, the model card and metrics.

Framework-free (numpy + the artifact loader): the BentoML service, the Starlette routes and the tests all
call the same :class:`Predictor`, so a prediction means the same thing on every route.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from . import prometheus
from .artifact import Artifact, load_artifact
from .artifact_format import INPUT_NAME, OUTPUT_NAMES
from .images import DEFAULT_MAX_IMAGE_PIXELS, DEFAULT_MAX_IMAGE_SIDE, ImagePolicy
from .validation import InputSpec, Limits

SERVICE_NAME = "binenc"
# Metadata that places the classes' vertices and centres in the latent space: what a white-box attack on the
# reject option needs. GET /model shows it only where Settings.card_geometry says so (docs/serving.md).
GEOMETRY_FIELDS = ("geometry", "codebook")


class Predictor:
    """Runs the artifact and turns its eight outputs into per-instance JSON-ready predictions."""

    def __init__(
        self,
        artifact: Artifact,
        limits: Limits | None = None,
        model_name: str = SERVICE_NAME,
        source: str | None = None,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
        max_image_side: int = DEFAULT_MAX_IMAGE_SIDE,
        card_geometry: bool = True,
        max_request_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ) -> None:
        self.artifact = artifact
        self.card_geometry = card_geometry
        self.limits = limits or Limits()
        self.model_name = model_name
        self.source = source or str(artifact.path)
        c, h, w = artifact.input_shape
        self.spec = InputSpec(int(c), int(h), int(w))
        md = artifact.metadata
        self.dataset = md.get("dataset")
        self.policy = ImagePolicy.for_model(
            int(c), int(h), int(w), self.dataset, max_image_pixels, max_image_side, max_request_pixels
        )
        self.classes = list(artifact.classes)
        self.threshold = float(artifact.threshold)
        self.file_sha256 = artifact.file_sha256
        self.version = str(md.get("checksum", "")).removeprefix("sha256:")[:12] or "1"
        self._session = artifact.session
        self._output_names = list(OUTPUT_NAMES)

    @classmethod
    def from_path(
        cls,
        path: str | Path,
        limits: Limits | None = None,
        source: str | None = None,
        providers: str = "auto",
        threads: int = 1,
        **kwargs: Any,
    ) -> Predictor:
        """Open ``path`` once: ``threads`` intra-op ONNX Runtime threads that do not spin (a spinning thread
        steals the event loop's core)."""
        artifact = load_artifact(path, providers=providers, threads=threads, spinning=False)
        return cls(artifact, limits, source=source, **kwargs)

    # ------------------------------------------------------------------ inference
    def infer(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """The eight raw outputs for validated float32 (N, C, H, W) pixels."""
        if len(pixels) <= self.artifact.batch_size:
            # Fast path for already-validated input: one session call, no re-check, no concatenation.
            out = self._session.run(self._output_names, {INPUT_NAME: pixels})
            return dict(zip(OUTPUT_NAMES, out, strict=True))
        return self.artifact.run(pixels)

    def format(self, outputs: dict[str, np.ndarray], threshold: float | None = None) -> list[dict[str, Any]]:
        """Per-instance prediction dicts (the same on /predict, /predict_image and /predict_batch)."""
        accepted, reasons = self.artifact.decide(outputs, threshold)
        probs = np.asarray(outputs["probs"], dtype=np.float64)
        labels = np.asarray(outputs["logits"]).argmax(axis=1).tolist()
        nearest = np.asarray(outputs["nearest_vertex_class"]).reshape(-1).tolist()
        rel = np.asarray(outputs["reliability"], dtype=np.float64).reshape(-1).tolist()
        dn = np.asarray(outputs["dist_nearest_vertex"], dtype=np.float64).reshape(-1).tolist()
        dp = np.asarray(outputs["dist_predicted_vertex"], dtype=np.float64).reshape(-1).tolist()
        dc = np.asarray(outputs["dist_class_centre"], dtype=np.float64).reshape(-1).tolist()
        classes = self.classes
        preds = []
        for i, label in enumerate(labels):
            nc = int(nearest[i])
            preds.append(
                {
                    "label": int(label),
                    "class_name": classes[label],
                    "probabilities": probs[i].tolist(),
                    "reliability": rel[i],
                    "dist_nearest_vertex": dn[i],
                    "dist_predicted_vertex": dp[i],
                    "dist_class_centre": dc[i],
                    "nearest_vertex_class": nc if nc >= 0 else None,
                    "nearest_class_name": classes[nc] if 0 <= nc < len(classes) else None,
                    "accepted": bool(accepted[i]),
                    "reason": reasons[i],
                }
            )
        return preds

    def predict(
        self, pixels: np.ndarray, threshold: float | None = None, route: str = "predict"
    ) -> list[dict]:
        t0 = time.perf_counter()
        outputs = self.infer(pixels)
        preds = self.format(outputs, threshold)
        prometheus.observe_predictions(route, preds, time.perf_counter() - t0)
        return preds

    # ------------------------------------------------------------------ model card
    def model_card(self) -> dict[str, Any]:
        """The card: headline, contract, request formats and limits; the rejection geometry only when
        ``card_geometry`` (else ``geometry_withheld`` names the fields left out)."""
        md = self.artifact.metadata
        if not self.card_geometry:
            md = {k: v for k, v in md.items() if k not in GEOMETRY_FIELDS}
        card: dict[str, Any] = {
            "name": md.get("name", self.model_name),
            "service_model_name": self.model_name,
            "version": self.version,
            "source": self.source,
            "file_sha256": self.file_sha256,
            "provider": self.artifact.provider,
            "dataset": self.dataset,
            "variant": md.get("variant"),
            "classes": self.classes,
            "input": md.get("input"),
            "score": md.get("score"),
            "threshold": self.threshold,
            "target_accept_rate": self.artifact.target_accept_rate,
            "acceptance": self.artifact.acceptance,
            "metadata": md,
            "annex": self.artifact.annex,
            "request": {
                "predict": {
                    "content_type": "application/json",
                    "instances_shape": ["N", *self.spec.request_shape],
                    "pixel_range": ["0-1 (default, floats)", "0-255 (whole numbers)"],
                    "threshold": f"optional, between {self.threshold:.6g} and 1",
                },
                "predict_batch": {
                    "content_type": "application/json",
                    "pixels_shape": ["N", *self.spec.model_shape],
                    "pixel_range": "0-1",
                },
                "predict_image": {
                    "content_type": "multipart/form-data (field 'image', repeatable) or image/png, "
                    "image/jpeg",
                    "policy": self.policy.describe(),
                },
                "oip_v2": {
                    "model": self.model_name,
                    "input": INPUT_NAME,
                    "datatype": "FP32",
                    "shape": [-1, *self.spec.model_shape],
                },
            },
            "limits": {
                "max_body_bytes": self.limits.max_body_bytes,
                "max_batch": self.limits.max_batch,
            },
        }
        if not self.card_geometry:
            card["geometry_withheld"] = [k for k in GEOMETRY_FIELDS if k in self.artifact.metadata]
        return card
