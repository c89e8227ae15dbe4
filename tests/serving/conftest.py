"""Serving fixtures: ONE real ``bentoml serve`` per test session (startup is slow on 2 cores).

``served`` runs ``python -m bentoml serve`` from the repo root (bentofile.yaml → serving.service) with
``BINENC_MODEL_PATH`` pointing at the session's ``digits_artifact`` and the session's temporary
``BENTOML_HOME`` (set by tests/conftest.py).
"""

from __future__ import annotations

import httpx
import pytest
from server_util import Server, start_server


@pytest.fixture(scope="session")
def served(digits_artifact) -> Server:
    server = start_server({"BINENC_MODEL_PATH": str(digits_artifact), "BINENC_MODEL_TAG": None})
    yield server
    server.stop()


@pytest.fixture(scope="session")
def http(served) -> httpx.Client:
    with httpx.Client(base_url=served.url, timeout=30.0) as client:
        yield client


@pytest.fixture(scope="session")
def digits_pixels(digits_data):
    """A few digits test images as float32 (N, 1, 8, 8) in [0, 1] and their labels."""
    import numpy as np

    images = digits_data.test.images[:32].astype(np.float32) / 255.0
    return images, digits_data.test.labels[:32]
