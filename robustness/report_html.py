"""report.html: report.md rendered to one self-contained HTML file (markdown-it-py, tables on), every plot
inlined as a base64 ``data:`` URI, so the file can be mailed or opened offline without its folder."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from markdown_it import MarkdownIt

STYLE = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; max-width: 1200px; margin: 24px auto;
       padding: 0 20px; color: #202124; }
h1 { font-size: 24px; } h2 { font-size: 19px; margin-top: 32px; border-bottom: 1px solid #dadce0; }
h3 { font-size: 16px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13px; display: block; overflow-x: auto; }
th, td { border: 1px solid #dadce0; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f1f3f4; }
code { background: #f1f3f4; padding: 0 3px; border-radius: 3px; font-size: 13px; }
img { max-width: 100%; height: auto; display: block; margin: 8px 0; }
blockquote { border-left: 4px solid #b3261e; margin: 0; padding: 4px 12px; background: #fce8e6; }
#summary + p { font-size: 16px; background: #e8f0fe; padding: 12px 16px; border-radius: 6px; }
"""


def _inline_images(body: str, folder: Path) -> str:
    def repl(m: re.Match) -> str:
        src = html.unescape(m.group(2))
        path = folder / src
        if "/" in src or "\\" in src or not src.endswith(".png") or not path.is_file():
            return m.group(0)  # only plots written beside the report; never a path outside it
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f'{m.group(1)}data:image/png;base64,{data}"'

    return re.sub(r'(<img src=")([^"]+)"', repl, body)


def render_html(markdown: str, folder: Path, title: str = "Robustness bench report") -> str:
    """HTML of ``markdown`` with the PNGs it names (files in ``folder``) inlined."""
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    body = md.render(markdown)
    body = body.replace("<h2>Summary</h2>", '<h2 id="summary">Summary</h2>', 1)
    body = _inline_images(body, Path(folder))
    return (
        f'<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
        f"<style>{STYLE}</style>\n</head>\n<body>\n{body}</body>\n</html>\n"
    )


def write_html(markdown_path: Path) -> Path:
    """``report.html`` beside ``markdown_path`` (written atomically)."""
    markdown_path = Path(markdown_path)
    out = markdown_path.with_suffix(".html")
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(render_html(markdown_path.read_text(), markdown_path.parent))
    tmp.replace(out)
    return out
