"""The reference (docs/) and the evidence (research/) stay navigable: links resolve, the summary stays one page."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from setuptools import find_packages

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "research").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_every_relative_link_and_image_of_a_page_resolves():
    broken = [
        f"{page.relative_to(REPO)}: {target}"
        for page in PAGES
        for target in LINK.findall(page.read_text())
        if "://" not in target and not (page.parent / target).exists()
    ]
    assert broken == []


def test_the_claims_summary_is_one_page_and_links_every_study_page():
    claims = REPO / "research" / "claims.md"
    assert claims.stat().st_size <= 12 * 1024
    linked = set(LINK.findall(claims.read_text()))
    studies = {p.name for p in (REPO / "research").glob("*.md")} - {"claims.md", "README.md"}
    assert studies <= linked


def test_research_is_not_shipped_with_the_package():
    find = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    shipped = find_packages(str(REPO), include=find["include"])
    assert {"training", "serving", "robustness"} <= set(shipped)
    assert not [p for p in shipped if p.split(".")[0] in {"research", "tests", "scripts"}]
