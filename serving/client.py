"""A Python client for every route of the binenc service, on httpx (a dependency of BentoML, so it installs with
the service and needs no extra).

``bentoml.SyncHTTPClient`` only knows BentoML API methods (``/predict_batch``): ``/predict``, ``/predict_image``
and ``/model`` are answered by :class:`serving.middleware.DirectRoutes` before BentoML's router (a third of the
per-request overhead), so this module calls them over plain HTTP and returns typed results. Every failure, a
refusal by the server or a connection that could not be made, raises :class:`BinencError`, which carries the
uniform error body (``code``, ``message``). The Open Inference Protocol routes are for ``tritonclient``.

    from serving.client import Client
    with Client("http://localhost:3000") as client:
        p = client.predict_image("examples/fashion-mnist-ankle-boot.png").predictions[0]
        print(p.class_name, p.reliability, "accepted" if p.accepted else f"rejected ({p.reason})")
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import httpx

ImageInput = str | Path | bytes | Any  # a file path, PNG/JPEG bytes, or a PIL.Image.Image


class BinencError(Exception):
    """A request the service refused (``status`` ≥ 400) or could not be sent (``status`` None).

    ``code`` and ``message`` are the uniform error body's (``{"error": {"code": ..., "message": ...}}``);
    ``body`` is the whole decoded body (None when there was no JSON body).
    """

    def __init__(self, status: int | None, code: str, message: str, body: Any = None) -> None:
        super().__init__(f"{status or 'no response'} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.body = body


@dataclass(frozen=True)
class Prediction:
    """One instance's answer (see docs/serving.md, ``POST /predict``)."""

    label: int
    class_name: str
    probabilities: list[float]
    reliability: float
    dist_nearest_vertex: float
    dist_predicted_vertex: float
    dist_class_centre: float
    nearest_vertex_class: int | None
    nearest_class_name: str | None
    accepted: bool
    reason: str | None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Prediction:
        return cls(**{f.name: d[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class PredictResult:
    """The answer of ``/predict`` and ``/predict_image`` (``decode_ms`` only for images)."""

    model_name: str
    model_version: str
    threshold: float
    predictions: list[Prediction]
    decode_ms: float | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PredictResult:
        return cls(
            d["model"]["name"],
            d["model"]["version"],
            d["threshold"],
            [Prediction.from_json(p) for p in d["predictions"]],
            d.get("decode_ms"),
        )


@dataclass(frozen=True)
class ModelCard:
    """``GET /model``: the headline fields, and the whole card in ``raw``."""

    name: str
    version: str
    source: str
    dataset: str
    variant: str | None
    classes: list[str]
    threshold: float
    target_accept_rate: float | None
    annex: dict[str, Any]
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ModelCard:
        return cls(
            d["name"],
            d["version"],
            d["source"],
            d["dataset"],
            d.get("variant"),
            d["classes"],
            d["threshold"],
            d.get("target_accept_rate"),
            d.get("annex") or {},
            d,
        )

    @property
    def test_accuracy(self) -> float | None:
        return (self.raw.get("metadata", {}).get("training_metrics") or {}).get("test_acc")


def _error(response: httpx.Response) -> BinencError:
    try:
        body = response.json()
    except ValueError:
        return BinencError(response.status_code, f"http_{response.status_code}", response.text[:200])
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):  # the uniform body
        return BinencError(response.status_code, str(err.get("code")), str(err.get("message")), body)
    if isinstance(err, str):  # the Open Inference Protocol's shape under /v2
        return BinencError(
            response.status_code, str(body.get("code", f"http_{response.status_code}")), err, body
        )
    return BinencError(response.status_code, f"http_{response.status_code}", json.dumps(body)[:200], body)


def _image_part(image: ImageInput, i: int) -> tuple[str, bytes, str]:
    if isinstance(image, str | Path):
        data, name = Path(image).read_bytes(), Path(image).name
    elif isinstance(image, bytes | bytearray):
        data, name = bytes(image), f"image{i}"
    elif hasattr(image, "save"):  # PIL.Image.Image, sent losslessly as PNG
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        data, name = buf.getvalue(), f"image{i}.png"
    else:
        raise TypeError(f"image {i}: expected a path, bytes or a PIL image, got {type(image).__name__}")
    kind = "image/jpeg" if data[:3] == b"\xff\xd8\xff" else "image/png"
    return name, data, kind


def _as_lists(array: Any) -> Any:
    return array.tolist() if hasattr(array, "tolist") else array


class Client:
    """Synchronous client; ``api_key`` (default: the ``BINENC_API_KEY`` environment variable) is sent as
    ``Authorization: Bearer KEY``. Use it as a context manager (or call :meth:`close`) to release the connection
    pool; ``httpx_options`` go to :class:`httpx.Client` (e.g. ``verify=`` for TLS).

    Against a running service, ``Client("http://localhost:3000")``. Here an ``httpx.MockTransport`` stands in for
    it, answering as the service does, so the example runs without a server:

    >>> import httpx
    >>> answer = {"model": {"name": "fashion-mnist_bin_enc", "version": "1"}, "threshold": 0.11,
    ...           "predictions": [{"label": 9, "class_name": "ankle boot", "probabilities": [0.0] * 9 + [1.0],
    ...                            "reliability": 0.93, "dist_nearest_vertex": 0.2, "dist_predicted_vertex": 0.2,
    ...                            "dist_class_centre": 1.1, "nearest_vertex_class": 9,
    ...                            "nearest_class_name": "ankle boot", "accepted": True, "reason": None}]}
    >>> def service(request: httpx.Request) -> httpx.Response:
    ...     if request.headers.get("authorization") != "Bearer secret":
    ...         return httpx.Response(401, json={"error": {"code": "unauthorized", "message": "no key"}})
    ...     return httpx.Response(200, json=answer)
    >>> with Client("http://binenc.test", api_key="secret", transport=httpx.MockTransport(service)) as client:
    ...     p = client.predict([[0] * 28] * 28).predictions[0]
    >>> p.class_name, p.accepted, p.reason
    ('ankle boot', True, None)
    >>> with Client("http://binenc.test", api_key="", transport=httpx.MockTransport(service)) as client:
    ...     client.model()
    Traceback (most recent call last):
    ...
    serving.client.BinencError: 401 unauthorized: no key
    """

    def __init__(
        self,
        url: str = "http://localhost:3000",
        api_key: str | None = None,
        timeout: float = 30.0,
        **httpx_options: Any,
    ) -> None:
        api_key = os.environ.get("BINENC_API_KEY") if api_key is None else api_key
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout, **httpx_options)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as err:
            raise BinencError(
                None, "connection_error", f"{method} {path}: {type(err).__name__}: {err}"
            ) from err
        if response.status_code >= 400:
            raise _error(response)
        return response

    def _json(self, method: str, path: str, parse: Any, **kwargs: Any) -> Any:
        """The answer parsed by ``parse``; a body that is not what the route documents is a :class:`BinencError`."""
        response = self._request(method, path, **kwargs)
        try:
            return parse(response.json())
        except (ValueError, KeyError, TypeError) as err:
            raise BinencError(
                response.status_code,
                "invalid_response",
                f"{method} {path}: the answer is not what the route documents ({type(err).__name__}: {err})",
            ) from err

    def predict(
        self, instances: Any, *, pixel_range: str | None = None, threshold: float | None = None
    ) -> PredictResult:
        """``POST /predict``: a batch in the model's layout (N×H×W for grayscale, N×C×H×W otherwise).

        A numpy array of an integer dtype is sent with ``pixel_range="0-255"`` unless told otherwise.
        """
        if pixel_range is None and getattr(getattr(instances, "dtype", None), "kind", "") in ("u", "i"):
            pixel_range = "0-255"
        body: dict[str, Any] = {"instances": _as_lists(instances)}
        if pixel_range is not None:
            body["pixel_range"] = pixel_range
        if threshold is not None:
            body["threshold"] = threshold
        return self._json("POST", "/predict", PredictResult.from_json, json=body)

    def predict_image(self, *images: ImageInput, threshold: float | None = None) -> PredictResult:
        """``POST /predict_image``: one or more PNG/JPEG images (paths, bytes or PIL images)."""
        if not images:
            raise TypeError("predict_image needs at least one image")
        files = [("image", _image_part(img, i)) for i, img in enumerate(images)]
        data = {"threshold": repr(float(threshold))} if threshold is not None else None
        return self._json("POST", "/predict_image", PredictResult.from_json, files=files, data=data)

    def predict_batch(self, pixels: Any) -> list[Prediction]:
        """``POST /predict_batch`` (BentoML's adaptive batching): float N×C×H×W in [0, 1]."""
        return self._json(
            "POST",
            "/predict_batch",
            lambda answer: [Prediction.from_json(p) for p in answer],
            json={"pixels": _as_lists(pixels)},
        )

    def model(self) -> ModelCard:
        """``GET /model``: the model card."""
        return self._json("GET", "/model", ModelCard.from_json)

    def live(self) -> bool:
        """``GET /livez`` answers 200 (the process is up)."""
        return self._health("/livez")

    def ready(self) -> bool:
        """``GET /readyz`` answers 200 (the model is loaded and warmed up)."""
        return self._health("/readyz")

    def metrics(self) -> str:
        """``GET /metrics``: the Prometheus text exposition."""
        return self._request("GET", "/metrics").text

    def _health(self, path: str) -> bool:
        try:
            return self._http.get(path).status_code == 200
        except httpx.HTTPError:
            return False


__all__ = ["BinencError", "Client", "ModelCard", "PredictResult", "Prediction"]
