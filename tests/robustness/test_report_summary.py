"""report.md's plain summary, the sanity flags at the end, and the self-contained report.html, on a real bench
results.json (docs/example-report, four Fashion-MNIST models) and synthetic reliability arrays for the plots."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest

from robustness.report import write_report
from robustness.report_html import render_html
from robustness.report_markdown import render_markdown
from robustness.summary import summary_sentences

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "example-report" / "results.json"


@pytest.fixture(scope="module")
def results() -> dict:
    return json.loads(RESULTS.read_text())


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.])\s+", text.strip()) if s]


def test_five_sentences_with_the_answer_and_intervals(results):
    out = summary_sentences(results)
    assert len(out) == 5 and all(s.endswith(".") for s in out)
    e = results["models"]["bin_enc_s0"]
    accept = e["calibration"]["accept_rate"]
    assert f"accepts {100 * accept:.1f}% [95% CI" in out[2] and "bin_enc_s0" in out[1]
    # rejected share of unfamiliar images, pooled over the OOD sets (each set's own n)
    sets = results["ood_sets"]
    k = sum(round((1 - e["ood"][s]["accept_rate_at_threshold"]) * sets[s]["n"]) for s in e["ood"])
    n = sum(sets[s]["n"] for s in e["ood"])
    assert f"rejects {100 * k / n:.1f}% [95% CI" in out[2]
    robust = e["adversarial"]["headline"]["reject"]["vertex_distance"]["linf"]["value"]
    assert f"correct and accepted on {100 * robust:.1f}% [95% CI" in out[3]
    assert "every sanity check of the attacks passed" in out[3]
    assert out[4].startswith("Best at rejecting unfamiliar images: bin_enc_s0 (")
    for label in results["models"]:
        assert label in out[1]


def test_a_failed_flag_is_named_on_top_and_the_flags_section_is_last(results):
    broken = copy.deepcopy(results)
    flag = broken["models"]["no_pen_s0"]["adversarial"]["flags"][0]
    flag["ok"], flag["status"] = False, "FAIL"
    md = render_markdown(broken, {"_all": {}})
    head = md.split("## Headline", 1)[0]
    assert f"Sanity flags FAILED: no_pen_s0 / {flag['name']}" in head
    headings = re.findall(r"^## (.+)$", md, flags=re.M)
    assert headings[0] == "Summary" and headings[-1] == "Sanity flags"
    summary = md.split("## Summary\n\n", 1)[1].split("\n", 1)[0]
    assert len(_sentences(summary)) == 6
    clean = render_markdown(results, {"_all": {}})
    assert "FAILED" not in clean.split("## Headline", 1)[0]


def test_write_report_gives_a_self_contained_html_with_the_threshold_in_the_histogram(results, tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "bin_enc_s0": {
            "reliability_id": rng.uniform(0.005, 1, 500),
            "reliability_ood": {"mnist": rng.uniform(1e-5, 0.05, 300)},
        }
    }
    written = write_report(copy.deepcopy(results), arrays, tmp_path)
    page = written["html"].read_text()
    assert written["html"] == tmp_path / "report.html"
    pngs = re.findall(r'<img src="([^"]+)"', page)
    assert len(pngs) == len(list(tmp_path.glob("*.png"))) >= 10
    assert all(src.startswith("data:image/png;base64,") for src in pngs)
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert page.index('id="summary"') < page.index("Headline") < page.index("Sanity flags")
    assert "<table>" in page and "<th>model</th>" in page
    assert "reliability_hist_bin_enc_s0.png" in written["report"].read_text()


def test_reliability_histogram_shows_the_threshold_inside_its_axis():
    from robustness.report_plots import pyplot, reliability_hist_figure

    rng = np.random.default_rng(0)
    threshold = 0.011  # the shipped model's: inside the first bin of a linear 0..1 axis
    fig = reliability_hist_figure(
        "m", rng.uniform(0.005, 1, 500), {"mnist": rng.uniform(1e-5, 0.05, 300), "letters": None}, threshold
    )
    try:
        axes = [ax for ax in fig.axes if ax.get_visible() and ax.axison]
        assert len(axes) == 1
        ax = axes[0]
        lo, hi = ax.get_xlim()
        assert ax.get_xscale() == "log" and lo < threshold / 5 and hi == 1
        [legend] = fig.legends
        labels = [t.get_text() for t in legend.get_texts()]
        assert labels == [
            "rejected (below the threshold)",
            "ID test",
            "OOD set named above the panel",
            f"threshold {threshold:.3g}",
        ]
        assert ax.get_title() == "ID test vs mnist"
        assert any(list(line.get_xdata()) == [threshold, threshold] for line in ax.get_lines())
        assert all(t.get_fontsize() >= 7 for t in legend.get_texts())
    finally:
        pyplot().close(fig)


def test_html_inlines_only_plots_beside_the_report(tmp_path):
    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    outside = tmp_path.parent / "outside.png"
    outside.write_bytes(b"\x89PNG\r\n\x1a\nsecret")
    page = render_html("![a](a.png)\n\n![b](../outside.png)\n\n<script>alert(1)</script>\n", tmp_path)
    assert 'src="data:image/png;base64,' in page and 'src="../outside.png"' in page
    assert "<script>" not in page  # raw HTML in the markdown is escaped


def test_a_model_with_a_risk_guarantee_gets_its_certified_and_realized_risk_in_the_report(results):
    plain = render_markdown(results, {})
    assert "Risk guarantee" not in plain  # no artifact of this bench certifies a risk
    r = copy.deepcopy(results)
    r["models"]["bin_enc_s0"]["guarantee"] = {
        "n_test": 1000,
        "accepted": 760,
        "errors_accepted": 11,
        "coverage": 0.76,
        "selective_risk": 11 / 760,
        "selective_risk_ci95": [0.0072, 0.0258],
        "alpha": 0.02,
        "delta": 0.05,
        "upper_bound_at_threshold": 0.0191,
        "calibration_coverage": 0.756,
        "calibration_n": 4000,
        "risk_at_most_alpha": True,
    }
    text = render_markdown(r, {})
    assert "Risk guarantee" in text
    [row] = [line for line in text.splitlines() if line.startswith("| bin_enc_s0 | 2.0 at δ 0.05 | 1.9 |")]
    assert row.endswith("| 1.4 [0.7, 2.6] | 11 / 760 | 76.0 | 75.6 |")
