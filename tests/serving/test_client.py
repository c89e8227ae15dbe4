"""``serving.client`` over real HTTP against a real ``bentoml serve`` of the shipped model (API key on)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import API_KEY
from PIL import Image

from serving.client import BinencError, Client, ModelCard, PredictResult

ROOT = Path(__file__).resolve().parents[2]
BOOT = ROOT / "examples" / "fashion-mnist-ankle-boot.png"
SEVEN = ROOT / "examples" / "mnist-digit-seven.png"

REJECT_REASONS = ("below_threshold", "unoccupied_vertex", "disagrees_with_argmax")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(shipped):
    with Client(shipped.url, api_key=API_KEY) as c:
        yield c


def _doc_example(text: str) -> str:
    """The ```python block right under the "Python client" heading."""
    m = re.search(r"## Python client\n.*?```python\n(.*?)```", text, flags=re.S)
    assert m, "no python block under '## Python client'"
    return m.group(1)


def test_documented_example_prints_boot_accepted_and_seven_rejected(shipped):
    code = _doc_example((ROOT / "docs" / "serving.md").read_text())
    assert len(code.strip().splitlines()) == 5
    assert code in (ROOT / "README.md").read_text(), "README and docs/serving.md must show the same example"
    env = {**os.environ, "BINENC_API_KEY": API_KEY, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-c", code.replace("http://localhost:3000", shipped.url)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 2, run.stdout
    assert "ankle boot" in lines[0] and lines[0].endswith("accepted")
    assert re.search(r"rejected \((below_threshold|unoccupied_vertex|disagrees_with_argmax)\)$", lines[1]), (
        lines[1]
    )


def test_predict_image_from_path_bytes_and_pil(client):
    r = client.predict_image(BOOT, SEVEN.read_bytes(), Image.open(BOOT))
    assert isinstance(r, PredictResult) and r.decode_ms is not None and r.decode_ms >= 0
    boot, seven, boot_pil = r.predictions
    assert (boot.class_name, boot.accepted, boot.reason) == ("ankle boot", True, None)
    assert seven.accepted is False and seven.reason in REJECT_REASONS and seven.reliability < r.threshold
    assert boot_pil == boot  # a PIL image is sent losslessly
    assert len(boot.probabilities) == 10 and abs(sum(boot.probabilities) - 1) < 1e-4


def test_predict_takes_numpy_and_infers_the_0_255_range_from_the_dtype(client):
    pixels = np.asarray(Image.open(BOOT).convert("L"))[None]  # uint8, 1×28×28
    as_uint8 = client.predict(pixels).predictions[0]
    as_float = client.predict(pixels.astype(np.float32) / 255.0).predictions[0]
    assert as_uint8.class_name == as_float.class_name == "ankle boot"
    assert as_uint8.reliability == pytest.approx(as_float.reliability, rel=1e-5)
    strict = client.predict(pixels, threshold=0.999)
    assert strict.threshold == 0.999 and strict.predictions[0].accepted is False


def test_predict_batch_and_model_card_and_health(client):
    pixels = (np.asarray(Image.open(BOOT).convert("L"), dtype=np.float32) / 255.0)[None, None]
    [pred] = client.predict_batch(pixels)
    assert pred.class_name == "ankle boot" and pred.accepted
    card = client.model()
    assert isinstance(card, ModelCard) and card.dataset == "fashion-mnist" and len(card.classes) == 10
    assert card.test_accuracy is not None and 0.5 < card.test_accuracy <= 1
    assert "robust_acc_linf" in card.annex["robustness"]
    assert client.live() and client.ready()
    assert "binenc_predictions_total" in client.metrics()


def test_refusals_raise_binenc_error_with_the_uniform_body(client, shipped):
    with pytest.raises(BinencError) as err:
        client.predict([[0.5]])
    assert (err.value.status, err.value.code) == (400, "invalid_shape")
    assert err.value.body["error"]["code"] == "invalid_shape" and "28" in err.value.message
    with pytest.raises(BinencError) as err:
        client.predict_image(b"GIF89a not a png")
    assert err.value.status in (400, 415) and err.value.code in ("invalid_image", "unsupported_image_format")
    with pytest.raises(BinencError) as err:
        client.predict_image(BOOT, threshold=0.0)  # below the calibrated threshold
    assert err.value.code == "invalid_threshold"
    with Client(shipped.url, api_key="wrong-key") as wrong:
        assert wrong.live()  # health needs no key
        with pytest.raises(BinencError) as err:
            wrong.model()
    assert (err.value.status, err.value.code) == (401, "unauthorized")


def test_unreachable_service_is_the_same_exception_type():
    from server_util import free_port

    with Client(f"http://127.0.0.1:{free_port()}", timeout=2) as c:
        assert c.ready() is False
        with pytest.raises(BinencError) as err:
            c.model()
    assert err.value.status is None and err.value.code == "connection_error"


def test_an_answer_that_is_not_the_documented_shape_is_a_binenc_error(shipped):
    with Client(shipped.url, api_key=API_KEY) as c, pytest.raises(BinencError) as err:
        c._json("GET", "/livez", ModelCard.from_json)  # a real route whose body is not a model card
    assert err.value.code == "invalid_response" and err.value.status == 200
