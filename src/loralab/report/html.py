"""Render a report Document to ONE self-contained HTML file: inline CSS, images as base64 data URIs,
no scripts and no external references, so it can be mailed or archived and opened offline."""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

from loralab.report.document import Bullets, Document, Heading, Image, Paragraph, Table

CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, "Noto Sans", sans-serif; margin: 2em auto;
       max-width: 1100px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; height: auto; display: block; margin: 1em 0; }
ul { padding-left: 1.4em; }
"""


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def render_html(doc: Document) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(doc.title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{escape(doc.title)}</h1>",
    ]
    for b in doc.blocks:
        if isinstance(b, Heading):
            level = min(b.level + 1, 6)
            parts.append(f"<h{level}>{escape(b.text)}</h{level}>")
        elif isinstance(b, Paragraph):
            parts.append(f"<p>{escape(b.text)}</p>")
        elif isinstance(b, Bullets):
            parts.append("<ul>" + "".join(f"<li>{escape(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{escape(h)}</th>" for h in b.header)
            body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in b.rows)
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(b, Image):
            parts.append(f'<img src="{_data_uri(b.path)}" alt="{escape(b.alt)}">')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_html(doc: Document, html_path: Path) -> Path:
    html_path.write_text(render_html(doc), encoding="utf-8")
    return html_path
