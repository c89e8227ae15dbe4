"""The service's own Prometheus metrics, exposed on BentoML's ``/metrics`` next to its default ones.

``prometheus_client`` is imported on first use, never at module import: BentoML sets
``PROMETHEUS_MULTIPROC_DIR`` in each worker after the service module is imported, and a client imported
earlier would run in single-process mode and its metrics would never reach ``/metrics``.

* ``binenc_predictions_total{route, outcome}``: predictions, ``outcome`` = accepted | rejected
* ``binenc_rejections_total{route, reason}``: rejected predictions by reason
* ``binenc_reliability{route}``: histogram of the reliability score (0..1, buckets of 0.05)
* ``binenc_inference_seconds{route}``: model call + formatting time per request
* ``binenc_request_errors_total{route, code}``: refused requests by error code (uniform error body)
* ``binenc_http_requests_total{route, status}`` and ``binenc_http_request_seconds{route}``: every request,
  ``route`` a route template from a fixed set (:func:`serving.middleware.route_template`)

Every label value comes from a fixed set, so the exposition cannot grow with what clients send. The service
serves ``/metrics`` itself (:func:`exposition`); BentoML's HTTP metrics, labelled by raw path, are off.
"""

from __future__ import annotations

import os
import threading
from typing import Any

_LOCK = threading.Lock()
_METRICS: dict[str, Any] | None = None
RELIABILITY_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
HTTP_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


def _get() -> dict[str, Any]:
    global _METRICS
    if _METRICS is None:
        with _LOCK:
            if _METRICS is None:
                import prometheus_client as prom  # deferred on purpose, see the module docstring

                _METRICS = {
                    "predictions": prom.Counter(
                        "binenc_predictions",
                        "Predictions served, by route and outcome",
                        ["route", "outcome"],
                    ),
                    "rejections": prom.Counter(
                        "binenc_rejections",
                        "Rejected predictions, by route and reason",
                        ["route", "reason"],
                    ),
                    "reliability": prom.Histogram(
                        "binenc_reliability",
                        "Reliability score of served predictions",
                        ["route"],
                        buckets=RELIABILITY_BUCKETS,
                    ),
                    "latency": prom.Histogram(
                        "binenc_inference_seconds",
                        "Model call and formatting time per request",
                        ["route"],
                        buckets=LATENCY_BUCKETS,
                    ),
                    "errors": prom.Counter(
                        "binenc_request_errors",
                        "Requests refused with the uniform error body",
                        ["route", "code"],
                    ),
                    "requests": prom.Counter(
                        "binenc_http_requests",
                        "HTTP requests by route template and status",
                        ["route", "status"],
                    ),
                    "duration": prom.Histogram(
                        "binenc_http_request_seconds",
                        "HTTP request duration by route template",
                        ["route"],
                        buckets=HTTP_BUCKETS,
                    ),
                }
    return _METRICS


_CHILDREN: dict[tuple, Any] = {}


def _child(metric: str, *labels: str) -> Any:
    """``metric.labels(*labels)``, cached (``labels()`` costs more than the increment itself)."""
    key = (metric, *labels)
    child = _CHILDREN.get(key)
    if child is None:
        child = _CHILDREN[key] = _get()[metric].labels(*labels)
    return child


def observe_predictions(route: str, preds: list[dict], seconds: float | None = None) -> None:
    n_acc = sum(1 for p in preds if p["accepted"])
    if n_acc:
        _child("predictions", route, "accepted").inc(n_acc)
    if len(preds) - n_acc:
        _child("predictions", route, "rejected").inc(len(preds) - n_acc)
        for p in preds:
            if not p["accepted"]:
                _child("rejections", route, p["reason"] or "unknown").inc()
    hist = _child("reliability", route)
    for p in preds:
        hist.observe(p["reliability"])
    if seconds is not None:
        _child("latency", route).observe(seconds)


def observe_raw(
    route: str, accepted: Any, reliability: Any, reasons: list[str | None], seconds: float | None = None
) -> None:
    """Same counters for routes that return raw tensors (OIP): ``accepted`` bools, ``reliability`` floats."""
    acc = [bool(a) for a in accepted]
    n_acc = sum(acc)
    if n_acc:
        _child("predictions", route, "accepted").inc(n_acc)
    if len(acc) - n_acc:
        _child("predictions", route, "rejected").inc(len(acc) - n_acc)
        for ok, reason in zip(acc, reasons, strict=True):
            if not ok:
                _child("rejections", route, reason or "unknown").inc()
    hist = _child("reliability", route)
    for r in reliability:
        hist.observe(float(r))
    if seconds is not None:
        _child("latency", route).observe(seconds)


def observe_error(route: str, code: str) -> None:
    _child("errors", route, code).inc()


def observe_request(route: str, status: int, seconds: float) -> None:
    _child("requests", route, str(status)).inc()
    _child("duration", route).observe(seconds)


def exposition() -> tuple[bytes, str]:
    """``/metrics``: the Prometheus text of every worker (multiprocess mode under ``bentoml serve``)."""
    import prometheus_client as prom
    from prometheus_client import multiprocess

    _get()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = prom.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = prom.REGISTRY
    return prom.generate_latest(registry), prom.CONTENT_TYPE_LATEST
