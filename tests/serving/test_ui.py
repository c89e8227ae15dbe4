"""``GET /ui`` in a real headless browser (Debian's chromium + chromium-driver, driven by Selenium) against a real
``bentoml serve`` of the shipped model with an API key, plus the page's headers and its off switch.

``UI_SCREENSHOT_DIR=docs`` writes the two screenshots docs/serving.md shows (else they go to a temporary folder).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import API_KEY

ROOT = Path(__file__).resolve().parents[2]
BOOT = ROOT / "examples" / "fashion-mnist-ankle-boot.png"
SEVEN = ROOT / "examples" / "mnist-digit-seven.png"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.slow


def test_page_is_served_without_a_key_with_a_strict_policy(shipped):
    r = httpx.get(shipped.url + "/ui", timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'sha256-" in csp and "connect-src 'self'" in csp and "unsafe-inline'; img" in csp
    assert "'unsafe-inline'" not in csp.split("script-src", 1)[1].split(";", 1)[0]
    html = r.text
    assert "http://" not in html and "https://" not in html, "the page must not load anything from elsewhere"
    assert "/predict_image" in html and "/model" in html
    assert (
        httpx.get(shipped.url + "/model", timeout=30).status_code == 401
    )  # the data routes still need the key


def test_setting_switches_the_page_off():
    from serving.settings import Settings

    assert Settings.from_env({}).ui is True and Settings.from_env({"BINENC_UI": "0"}).ui is False
    probe = (
        "import serving.service as s, serving.ui as u; "
        "print(any(cls is u.UiPage for cls, _ in s.BinencService.middlewares))"
    )
    for value, expected in (("0", "False"), ("1", "True")):
        env = {**os.environ, "BINENC_UI": value, "PYTHONPATH": str(ROOT), "BENTOML_DO_NOT_TRACK": "True"}
        out = subprocess.run(
            [sys.executable, "-c", probe], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip().splitlines()[-1] == expected


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip(
            "no chromium/chromedriver on this machine (apt-get install chromium chromium-driver; "
            "`make install` does it)"
        )
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never try to download a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1200,1000",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _upload(driver, path: Path, expect: str, timeout: float = 60) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.find_element(By.ID, "file").send_keys(str(path))

    def shown(d):
        verdict = d.find_element(By.ID, "verdict").text
        error = d.find_element(By.ID, "error").text
        return verdict == expect or bool(error)

    WebDriverWait(driver, timeout).until(shown)
    assert driver.find_element(By.ID, "error").text == ""


def test_browser_shows_accepted_and_rejected(browser, shipped, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    out = Path(os.environ.get("UI_SCREENSHOT_DIR") or tmp_path)
    browser.get(shipped.url + "/ui")
    # No key yet: the card cannot be read and an upload says a key is needed.
    WebDriverWait(browser, 30).until(lambda d: "API key" in d.find_element(By.ID, "card").text)
    browser.find_element(By.ID, "file").send_keys(str(BOOT))
    WebDriverWait(browser, 30).until(lambda d: "unauthorized" in d.find_element(By.ID, "error").text)
    assert browser.find_element(By.ID, "answer").get_attribute("hidden") is not None

    key = browser.find_element(By.ID, "apikey")
    key.send_keys(API_KEY)
    browser.execute_script("arguments[0].dispatchEvent(new Event('change'))", key)
    WebDriverWait(browser, 30).until(lambda d: "test accuracy" in d.find_element(By.ID, "card").text)
    card = browser.find_element(By.ID, "card").text
    test_acc = json.loads((ROOT / "models" / "fashion-mnist_bin_enc" / "provenance.json").read_text())[
        "training_metrics"
    ]["test_acc"]
    assert f"{100 * test_acc:.1f}%" in card  # the shipped model's test accuracy
    assert "under attack" in card and ", mnist 0.9" in card and "attack + reject" in card

    _upload(browser, BOOT, "accepted")
    assert "ankle boot" in browser.find_element(By.ID, "class").text
    assert browser.find_element(By.CSS_SELECTOR, "#probs tr.top td.name").text == "ankle boot"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#probs tr")) == 10
    browser.save_screenshot(str(out / "ui-accepted.png"))

    _upload(browser, SEVEN, "rejected")
    why = browser.find_element(By.ID, "why").text
    with httpx.Client(base_url=shipped.url, timeout=30) as http:  # the page must say what the API says
        with open(SEVEN, "rb") as f:
            answer = http.post(
                "/predict_image",
                files={"image": ("7.png", f, "image/png")},
                headers={"Authorization": "Bearer " + API_KEY},
            ).json()["predictions"][0]
    assert answer["accepted"] is False and f"(reason: {answer['reason']})" in why
    assert {
        "below_threshold": "below the threshold",
        "unoccupied_vertex": "no class occupies",
        "disagrees_with_argmax": "disagrees with the predicted class",
    }[answer["reason"]] in why
    fill = browser.find_element(By.ID, "reliability-fill").rect
    mark = browser.find_element(By.ID, "threshold-marker").rect
    assert (
        fill["width"] < mark["x"] - browser.find_element(By.ID, "reliability-bar").rect["x"]
    )  # bar ends left of it
    browser.save_screenshot(str(out / "ui-rejected.png"))
    assert (out / "ui-accepted.png").stat().st_size > 10_000 and (
        out / "ui-rejected.png"
    ).stat().st_size > 10_000
