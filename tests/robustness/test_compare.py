"""Cross-bench paired comparison: same-points checks, per-pair and pooled McNemar, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from robustness import compare
from robustness.results import SCHEMA
from robustness.stats import mcnemar


def _entry(
    label: str,
    robust: list[bool],
    reject: list[bool],
    points: list[int] | None = None,
    converged: bool | None = None,
) -> dict:
    head = {
        "robust_acc_linf": {"robust_points": robust},
        "reject": {
            "vertex_distance" if label.startswith("bin_enc") else "max_softmax": {
                "linf": {"robust_points": reject}
            }
        },
    }
    adv = {"n": {"cheap": len(robust)}, "headline": head}
    if points is not None:
        adv["points"] = points
    if converged is not None:
        adv["flags"] = [
            {"name": f"adaptive_converged[{option},{norm}]", "ok": converged if norm == "l2" else True}
            for option in ("vertex_distance",)
            for norm in ("linf", "l2")
        ]
    return {"label": label, "variant": label.rsplit("_s", 1)[0], "seed": 0, "adversarial": adv}


def _results(
    tmp_path, name: str, *entries: dict, seed: int = 0, headline_linf: float = 0.05, escalations: int = 3
):
    path = tmp_path / f"{name}.json"
    config = {
        "dataset": "fashion-mnist",
        "seed": seed,
        "adversarial": {
            "headline_linf": headline_linf,
            "headline_l2": 1.0,
            "adaptive_escalations": escalations,
        },
    }
    path.write_text(
        json.dumps({"schema": SCHEMA, "config": config, "models": {e["label"]: e for e in entries}})
    )
    return str(path)


def test_pairs_models_of_two_benches_and_pools_the_pairs(tmp_path, capsys):
    rng = np.random.default_rng(0)
    ra, ja, rb, jb = (rng.random((4, 50)) < 0.3).tolist()
    a = _results(tmp_path, "a", _entry("bin_enc_s0", ra, ja), _entry("bin_enc_s1", rb, jb))
    b = _results(tmp_path, "b", _entry("no_pen_s0", rb, ja), _entry("no_pen_s1", ra, [True] * 50))
    out = tmp_path / "cmp" / "c.json"
    rc = compare.main(
        [f"{a}:bin_enc_s0", f"{b}:no_pen_s0", f"{a}:bin_enc_s1", f"{b}:no_pen_s1", "--json", str(out)]
    )
    assert rc == 0
    res = json.loads(out.read_text())
    assert len(res["rows"]) == 4  # robust and reject, per pair
    first = res["rows"][0]
    assert (first["figure_a"], first["figure_b"]) == ("robust_linf", "robust_linf")
    assert first["a_only"] == mcnemar(ra, rb)["a_only"] and first["b_only"] == mcnemar(ra, rb)["b_only"]
    rej = next(
        r for r in res["rows"] if r["b_ref"].endswith("no_pen_s0") and r["figure_a"].startswith("reject")
    )
    assert (rej["figure_b"], rej["a_only"], rej["b_only"]) == (
        "reject_linf[max_softmax]",
        0,
        0,
    )  # same outcomes
    pooled = {r["figure_a"]: r for r in res["pooled"]}
    both = mcnemar(ra + rb, rb + ra)
    assert pooled["robust_linf"]["n"] == 100 and pooled["robust_linf"]["pairs"] == 2
    assert (
        pooled["robust_linf"]["a_only"] == both["a_only"]
        and pooled["robust_linf"]["p_value"] == both["p_value"]
    )
    assert pooled["reject_linf[vertex_distance]"]["b_only"] == 50 - sum(jb)  # no_pen_s1 holds every point
    assert "Pooled over the 2 pairs" in capsys.readouterr().out


def test_a_file_with_one_model_needs_no_label(tmp_path):
    a = _results(tmp_path, "a", _entry("bin_enc_s0", [True, False], [True, True]))
    b = _results(tmp_path, "b", _entry("bin_enc_s0", [False, False], [True, False]))
    assert compare.main([a, b]) == 0


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(seed=1), "bench seed 0 vs 1"),
        (dict(headline_linf=0.1), "attack plan headline_linf 0.05 vs 0.1"),
    ],
)
def test_models_on_other_points_are_refused(tmp_path, capsys, change, match):
    a = _results(tmp_path, "a", _entry("bin_enc_s0", [True] * 4, [True] * 4))
    b = _results(tmp_path, "b", _entry("no_pen_s0", [True] * 4, [True] * 4), **change)
    assert compare.main([a, b]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and match in err and "Traceback" not in err


def test_a_larger_escalation_cap_pairs_only_with_a_model_that_converged_within_its_own(tmp_path, capsys):
    more = _results(
        tmp_path, "more", _entry("bin_enc_s2", [True, False] * 3, [True] * 6, converged=False), escalations=4
    )
    done = _results(tmp_path, "done", _entry("no_pen_s2", [True] * 6, [False] * 6, converged=True))
    undone = _results(tmp_path, "undone", _entry("no_pen_s2", [True] * 6, [False] * 6, converged=False))
    unknown = _results(tmp_path, "unknown", _entry("no_pen_s2", [True] * 6, [False] * 6))
    assert compare.main([more, done]) == 0
    out = capsys.readouterr().out
    assert "Note:" in out and "converged within 3" in out
    for other in (
        undone,
        unknown,
    ):  # its check ran out of doublings, or the file cannot say: more might have broken more
        assert compare.main([more, other]) == 2
        assert "adaptive_escalations 4 vs 3" in capsys.readouterr().err
    assert compare.main([done, more]) == 0  # either order


def test_stored_point_indices_must_agree(tmp_path, capsys):
    a = _results(tmp_path, "a", _entry("bin_enc_s0", [True] * 3, [True] * 3, points=[4, 9, 1]))
    b = _results(tmp_path, "b", _entry("no_pen_s0", [True] * 3, [True] * 3, points=[4, 9, 2]))
    assert compare.main([a, b]) == 2
    assert "test indices" in capsys.readouterr().err
    c = _results(tmp_path, "c", _entry("no_pen_s0", [True] * 3, [True] * 3, points=[4, 9, 1]))
    assert compare.main([a, c]) == 0


def test_bad_references_are_named(tmp_path, capsys):
    a = _results(tmp_path, "a", _entry("bin_enc_s0", [True], [True]), _entry("no_pen_s0", [True], [True]))
    (tmp_path / "junk.json").write_text("{not json")
    (tmp_path / "other.json").write_text(json.dumps({"schema": {"name": "something else"}, "models": {}}))
    bare = _results(tmp_path, "bare", {"label": "bin_enc_s0", "adversarial": {}})
    for argv, match in [
        ([a, a], "holds 2 models; name one"),
        ([f"{a}:lin_pen_s0", f"{a}:no_pen_s0"], "no model 'lin_pen_s0'"),
        ([str(tmp_path / "none.json"), a], "no such results file"),
        ([str(tmp_path / "junk.json"), a], "not a bench results.json"),
        ([str(tmp_path / "other.json"), a], "not a bench results.json"),
        ([a], "come in pairs"),
        ([bare, f"{a}:no_pen_s0"], "no adversarial headline"),
    ]:
        assert compare.main(argv) == 2
        err = capsys.readouterr().err
        assert match in err and "Traceback" not in err, err
