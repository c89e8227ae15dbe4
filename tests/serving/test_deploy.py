"""docs/deploy.md and deploy/*.yaml against what exists: routes a real server answers, ``BINENC_*`` settings it
parses, the metric series it exports, the measured RSS, JSON logs; Docker steps only where an engine exists."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import API_KEY

from serving.middleware import hash_key
from serving.settings import ENV, Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
GUIDE = ROOT / "docs" / "deploy.md"
SEVEN = ROOT / "examples" / "mnist-digit-seven.png"


def _docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d is not None]


def _kube() -> tuple[dict, dict]:
    docs = {d["kind"]: d for d in _docs("kubernetes.yaml")}
    assert set(docs) == {"Deployment", "Service"}
    return docs["Deployment"], docs["Service"]


def _container() -> dict:
    [c] = _kube()[0]["spec"]["template"]["spec"]["containers"]
    return c


def test_every_manifest_is_valid_yaml_of_a_known_kind():
    kinds = [d["kind"] for f in sorted(DEPLOY.glob("*.yaml")) for d in _docs(f.name) if "kind" in d]
    assert sorted(kinds) == ["Deployment", "PrometheusRule", "Service", "ServiceMonitor"]
    for f in DEPLOY.glob("*.yaml"):
        for d in _docs(f.name):
            assert "kind" not in d or {"apiVersion", "metadata", "spec"} <= set(d), f.name


def test_deployment_env_names_real_settings_that_parse(tmp_path):
    env = {e["name"]: e["value"] for e in _container()["env"]}
    binenc = {k: v for k, v in env.items() if k.startswith("BINENC_")}
    assert set(binenc) <= set(ENV.values()), set(binenc) - set(ENV.values())
    keys = tmp_path / "api_keys.txt"
    keys.write_text(hash_key("k") + "\n")
    s = Settings.from_env({**binenc, "BINENC_API_KEYS_FILE": str(keys)})
    assert s.workers == 1 and s.json_logs and s.auth_enabled
    mounts = {m["mountPath"] for m in _container()["volumeMounts"]}
    for var in ("BINENC_API_KEYS_FILE", "BINENC_PUBLIC_KEY"):
        assert str(Path(binenc[var]).parent) in mounts, f"{var} points outside the mounted volumes"


def test_guide_names_only_real_settings_and_every_one_that_matters():
    text = GUIDE.read_text()
    named = set(re.findall(r"\bBINENC_[A-Z_]+\b", text))
    client_side = {"BINENC_API_KEY"}  # read by serving.client in the caller's process, not by the server
    assert named - client_side <= set(ENV.values()), named - client_side - set(ENV.values())
    matters = {
        "BINENC_WORKERS",
        "BINENC_MODEL_PATH",
        "BINENC_MODEL_TAG",
        "BINENC_API_KEYS_FILE",
        "BINENC_PUBLIC_KEY",
        "BINENC_JSON_LOGS",
        "BINENC_UI",
        "BINENC_MAX_CONCURRENCY",
        "BINENC_TIMEOUT_S",
        "BINENC_ORT_THREADS",
        "BINENC_ACCESS_LOG",
        "BINENC_MAX_BODY_BYTES",
        "BINENC_AUTH_OPEN_PATHS",
    }
    assert matters <= named, matters - named
    for f in DEPLOY.glob("*.yaml"):
        assert f"deploy/{f.name}" in text, f"docs/deploy.md does not mention deploy/{f.name}"


def test_service_and_monitor_select_the_deployment():
    dep, svc = _kube()
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    port_names = {p["name"]: p["containerPort"] for p in _container()["ports"]}
    assert port_names == {"http": 3000}  # BentoML's image serves on 3000
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= set(port_names)
    [mon] = _docs("servicemonitor.yaml")
    assert mon["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert {e["port"] for e in mon["spec"]["endpoints"]} <= {p["name"] for p in svc["spec"]["ports"]}
    [scrape] = _docs("prometheus-scrape.yaml")
    assert scrape["scrape_configs"][0]["metrics_path"] == "/metrics"


def test_memory_request_covers_the_measured_peak_rss():
    rss = json.loads((DEPLOY / "rss.json").read_text())
    one_worker = next(r for r in rss["rows"] if r["workers"] == 1)
    res = _container()["resources"]

    def mib(q: str) -> float:
        return float(q[:-2]) * {"Mi": 1, "Gi": 1024}[q[-2:]]

    assert mib(res["requests"]["memory"]) >= one_worker["peak_mib"]
    assert mib(res["limits"]["memory"]) >= 1.5 * one_worker["peak_mib"]
    assert f"{one_worker['peak_mib']:.0f} MiB" in GUIDE.read_text()


@pytest.mark.slow
def test_probe_and_scrape_routes_answer_without_a_key_and_export_every_alerted_series(shipped):
    c = _container()
    with httpx.Client(base_url=shipped.url, timeout=30) as http:  # no API key, as the kubelet and Prometheus
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            path = c[probe]["httpGet"]["path"]
            assert http.get(path).status_code == 200, path
        with open(SEVEN, "rb") as f:  # one rejection, so the rejection series exists
            r = http.post(
                "/predict_image",
                files={"image": ("7.png", f, "image/png")},
                headers={"Authorization": "Bearer " + API_KEY},
            )
        assert r.status_code == 200 and r.json()["predictions"][0]["accepted"] is False
        http.post("/predict", json={"instances": [[0]]}, headers={"Authorization": "Bearer " + API_KEY})
        [mon] = _docs("servicemonitor.yaml")
        exposition = http.get(mon["spec"]["endpoints"][0]["path"]).text
    [rules] = _docs("alerts.yaml")
    exprs = [r["expr"] for g in rules["spec"]["groups"] for r in g["rules"]]
    series = {s for e in exprs for s in re.findall(r"\bbinenc_[a-z_]+\b", e)}
    assert series == {"binenc_rejections_total", "binenc_predictions_total", "binenc_request_errors_total"}
    for s in series:
        assert re.search(rf"^{s}\{{", exposition, flags=re.M), f"{s} not exported on /metrics"
    for s in re.findall(r"`(binenc_[a-z_]+)", GUIDE.read_text()):
        assert s.removesuffix("_bucket") in exposition, f"docs/deploy.md names {s}, which /metrics lacks"


@pytest.mark.slow
def test_json_logs_are_one_object_per_line(shipped):
    httpx.get(shipped.url + "/livez", timeout=30)
    httpx.get(shipped.url + "/model", timeout=30)  # 401: an access line with a status
    lines = [ln for ln in shipped.log_path.read_text().splitlines() if ln.strip()]
    parsed = [json.loads(ln) for ln in lines]  # every line, the supervisor's included
    access = [p for p in parsed if p["logger"] == "bentoml.access"]
    assert access and all({"time", "level", "message"} <= p.keys() for p in parsed)
    assert any("path=/model" in p["message"] and "status=401" in p["message"] for p in access)


@pytest.mark.slow
def test_readiness_is_never_200_before_the_model_answers(shipped_with_annex):
    """From the start of ``bentoml serve``: /readyz answers nothing (refused, then unanswered) until the worker has
    loaded the model, and once it says 200, /model and /livez answer too (what docs/deploy.md tells operators)."""
    import signal
    import tempfile
    import time

    from server_util import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "True", "BINENC_MODEL_PATH": str(shipped_with_annex)}
    for var in ("BINENC_MODEL_TAG", "BINENC_API_KEY_HASHES", "BINENC_API_KEYS_FILE"):
        env.pop(var, None)
    env.setdefault("BENTOML_HOME", tempfile.mkdtemp(prefix="binenc-bentoml-"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "bentoml", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 180
        with httpx.Client(timeout=0.5) as http:
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    seen.append(str(http.get(url + "/readyz").status_code))
                except httpx.ConnectError:
                    seen.append("refused")
                except httpx.TimeoutException:
                    seen.append("unanswered")
                if seen[-1] == "200":
                    break
                time.sleep(0.1)
        assert seen and seen[-1] == "200", seen[-20:]
        assert set(seen[:-1]) <= {"refused", "unanswered"} and seen[:-1], sorted(set(seen))
        with httpx.Client(base_url=url, timeout=5) as http:
            assert http.get("/model").status_code == 200 and http.get("/livez").status_code == 200
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def _docker_engine() -> str | None:
    docker = shutil.which("docker")
    if docker is None:
        return None
    ok = subprocess.run([docker, "info"], capture_output=True, timeout=60).returncode == 0
    return docker if ok else None


@pytest.mark.slow
def test_guide_commands_build_and_containerize(tmp_path):
    if _docker_engine() is None:
        pytest.skip(
            "no Docker engine here (`docker info` fails or docker is absent): `bentoml containerize` needs "
            "one; the YAML checks above run regardless"
        )
    block = re.search(r"<!-- tested: build -->\n```bash\n(.*?)```", GUIDE.read_text(), flags=re.S)
    assert block, "docs/deploy.md lacks the tested build block"
    env = {
        **os.environ,
        "BENTOML_DO_NOT_TRACK": "True",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    for var in ("BINENC_MODEL_PATH", "BINENC_MODEL_TAG"):
        env.pop(var, None)
    for cmd in [ln for ln in block.group(1).splitlines() if ln.strip() and not ln.startswith("#")]:
        run = subprocess.run(
            cmd.split("#", 1)[0], shell=True, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800
        )
        assert run.returncode == 0, f"{cmd}\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}"
