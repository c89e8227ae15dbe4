"""``GET /ui``: a page to try the model in a browser, served by the service itself.

One HTML file (``serving/static/ui.html``) with its CSS and JavaScript inline: no build step, no external
asset, works offline. It calls the same JSON routes as any client (``GET /model``, ``POST /predict_image``)
and sends the API key typed into it as ``Authorization: Bearer KEY``; the page itself holds no data, so it is
one of the routes that need no key by default (``BINENC_AUTH_OPEN_PATHS``). ``BINENC_UI=0`` switches it off.
A Content-Security-Policy allows only the page's own inline script (by its sha256) and same-origin requests.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from pathlib import Path

PAGE = Path(__file__).resolve().parent / "static" / "ui.html"
PATH = "/ui"


def _headers(html: bytes) -> list[tuple[bytes, bytes]]:
    scripts = re.findall(rb"<script>(.*?)</script>", html, flags=re.S)
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s).digest()).decode()}'" for s in scripts)
    csp = (
        f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; img-src blob:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"content-length", str(len(html)).encode()),
        (b"content-security-policy", csp.encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"cache-control", b"no-cache"),
    ]


class UiPage:
    """ASGI middleware answering ``GET``/``HEAD /ui`` with the page; everything else passes through."""

    def __init__(self, app: Callable, page: Path = PAGE) -> None:
        self.app = app
        self.html = page.read_bytes()
        self.headers = _headers(self.html)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope.get("path") != PATH or scope.get("method") not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        body = b"" if scope["method"] == "HEAD" else self.html
        await send({"type": "http.response.body", "body": body, "more_body": False})
