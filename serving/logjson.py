"""JSON log lines (``BINENC_JSON_LOGS=1``): one JSON object per line on the handlers BentoML configured.

BentoML configures logging in each worker before it imports the service; :func:`use_json_logs` (called from
:mod:`serving.service` at import) then swaps the formatter of every handler on the root and ``bentoml`` loggers,
so the access log (``bentoml.access``), errors and the service's own lines come out as JSON with the same
fields BentoML's text format carries (time, level, component, trace and request ids when set).
"""

from __future__ import annotations

import json
import logging
import time

FIELDS = ("component", "request_id", "service_name")


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", ...}``; exceptions go into ``"exc_info"`` as text."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value not in (None, "", 0):
                out[name] = str(value).strip("[]") if name == "component" else value
        trace = getattr(record, "trace_msg", "")
        if trace:
            out["trace"] = trace.strip(" ()")
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def use_json_logs() -> None:
    """Give every handler of the root and ``bentoml`` loggers the JSON formatter."""
    formatter = JsonFormatter()
    for logger in (logging.getLogger(), logging.getLogger("bentoml"), logging.getLogger("bentoml.access")):
        for handler in logger.handlers:
            handler.setFormatter(formatter)
