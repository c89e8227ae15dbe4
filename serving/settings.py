"""Every serving setting, read once from the ``BINENC_*`` environment into one frozen :class:`Settings`.

This is the only module of :mod:`serving` that reads the environment; everything else receives a
``Settings`` (or the part of it it needs). The table in docs/serving.md lists the same variables.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from .images import DEFAULT_MAX_IMAGE_PIXELS, DEFAULT_MAX_IMAGE_SIDE
from .json_body import DEFAULT_MAX_JSON_DEPTH
from .validation import DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY_BYTES, Limits

_HEX64 = re.compile(r"[0-9a-f]{64}")
# Health and metrics probes: open without an API key and never refused for load.
HEALTH_PATHS = ("/livez", "/readyz", "/healthz", "/metrics", "/v2/health/live", "/v2/health/ready")
DEFAULT_OPEN_PATHS = (*HEALTH_PATHS, "/docs.json", "/ui")


class SettingsError(ValueError):
    """A ``BINENC_*`` variable holds a value the service cannot use."""


@dataclass(frozen=True)
class Settings:
    """Serving configuration; field ``x`` comes from ``BINENC_X`` (upper case), see :data:`ENV`."""

    model_path: str | None = None
    model_tag: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_batch: int = DEFAULT_MAX_BATCH
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH
    workers: int = 1
    max_concurrency: int = 256
    timeout_s: float = 30.0
    body_timeout_s: float = 10.0
    max_uploads: int = 1024
    batch_max_latency_ms: int = 1000
    ort_threads: int = 1
    infer_threads: int = 1
    inline_max: int = 8
    trace_predict: bool = False
    access_log: bool = True
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_image_side: int = DEFAULT_MAX_IMAGE_SIDE
    max_request_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    decode_threads: int = 1
    model_card_geometry: bool = False
    oip_model_name: str = "binenc"
    api_key_hashes: frozenset[str] = field(default_factory=frozenset)
    api_keys_file: str | None = None
    auth_open_paths: tuple[str, ...] = DEFAULT_OPEN_PATHS
    public_key: str | None = None
    ui: bool = True
    json_logs: bool = False

    @property
    def limits(self) -> Limits:
        return Limits(self.max_body_bytes, self.max_batch, self.max_json_depth)

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_key_hashes)

    @property
    def card_geometry(self) -> bool:
        """Whether ``GET /model`` shows the rejection geometry: when asked, or when only key holders reach it."""
        return self.model_card_geometry or (self.auth_enabled and "/model" not in self.auth_open_paths)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build from ``environ`` (default ``os.environ``); unset or empty variables keep the default."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(ENV[f.name], "")
            if raw != "":
                values[f.name] = _parse(f.name, ENV[f.name], raw, cls.__dataclass_fields__[f.name].default)
        keys_file = values.get("api_keys_file")
        if keys_file:
            hashes = set(values.get("api_key_hashes", frozenset())) | read_key_hashes(Path(str(keys_file)))
            values["api_key_hashes"] = frozenset(hashes)
        asked = [ENV[name] for name in ("api_key_hashes", "api_keys_file") if env.get(ENV[name], "") != ""]
        if asked and not values.get("api_key_hashes"):
            # Asking for keys and getting none must not start an open service.
            raise SettingsError(
                f"{' and '.join(asked)} set but no API key hash found; authentication would be "
                "off: add sha256 hex digests, or unset the variable to serve without keys"
            )
        return cls(**values)  # type: ignore[arg-type]


ENV = {f.name: "BINENC_" + f.name.upper() for f in fields(Settings)}


def _parse(name: str, var: str, raw: str, default: object) -> object:
    if name == "api_key_hashes":
        return frozenset(_check_hash(var, h.strip().lower()) for h in raw.split(",") if h.strip())
    if name == "auth_open_paths":
        return () if raw.strip().lower() == "none" else tuple(p.strip() for p in raw.split(",") if p.strip())
    if isinstance(default, bool):
        if raw not in ("0", "1"):
            raise SettingsError(f"{var} must be 0 or 1, got {raw!r}")
        return raw == "1"
    if isinstance(default, int | float):
        kind = type(default)
        try:
            value = kind(raw)
        except ValueError:
            raise SettingsError(f"{var} must be a positive {kind.__name__}, got {raw!r}") from None
        if not math.isfinite(value) or value <= 0:
            raise SettingsError(f"{var} must be a positive {kind.__name__}, got {raw!r}")
        return value
    return raw


def _check_hash(var: str, value: str) -> str:
    if not _HEX64.fullmatch(value):
        raise SettingsError(
            f"{var}: expected sha256 hex digests (64 hex digits) of the API keys, got "
            f"{len(value)} characters; store hashes, never the keys themselves"
        )
    return value


def read_key_hashes(path: Path) -> set[str]:
    """One sha256 hex digest per line; blank lines and ``#`` comments are skipped."""
    try:
        text = path.read_text()
    except OSError as err:
        raise SettingsError(f"BINENC_API_KEYS_FILE: cannot read {path}: {err.strerror}") from None
    lines = (line.split("#", 1)[0].strip().lower() for line in text.splitlines())
    return {_check_hash(f"BINENC_API_KEYS_FILE ({path})", line) for line in lines if line}
