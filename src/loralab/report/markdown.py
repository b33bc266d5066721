"""Render a report Document to Markdown, linking images relative to the Markdown file."""

from __future__ import annotations

import os
from pathlib import Path

from loralab.report.document import Bullets, Document, Heading, Image, Paragraph, Table


def _cell(text: str) -> str:
    # a pipe or newline inside a cell (example inputs can contain both) would break the table
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _line(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ")


def render_markdown(doc: Document, md_path: Path) -> str:
    out = [f"# {_line(doc.title)}", ""]
    base = md_path.parent
    for b in doc.blocks:
        if isinstance(b, Heading):
            out += ["#" * (b.level + 1) + " " + _line(b.text), ""]
        elif isinstance(b, Paragraph):
            out += [_line(b.text), ""]
        elif isinstance(b, Bullets):
            out += [f"- {_line(item)}" for item in b.items] + [""]
        elif isinstance(b, Table):
            out.append("| " + " | ".join(_cell(h) for h in b.header) + " |")
            out.append("|" + "|".join("---" for _ in b.header) + "|")
            out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in b.rows]
            out.append("")
        elif isinstance(b, Image):
            rel = Path(os.path.relpath(b.path, base)).as_posix()
            out += [f"![{_cell(b.alt)}]({rel})", ""]
    return "\n".join(out).rstrip() + "\n"


def write_markdown(doc: Document, md_path: Path) -> Path:
    md_path.write_text(render_markdown(doc, md_path), encoding="utf-8")
    return md_path
