"""The report as a list of plain blocks, rendered twice (Markdown and HTML) from the same content so
the two files can never disagree on a number."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: list[str]


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Image:
    path: Path  # absolute path of the PNG on disk
    alt: str


Block = Heading | Paragraph | Bullets | Table | Image


@dataclass
class Document:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)


def fmt_metric(value: Any) -> str:
    """How every score appears in the report: 4 decimals (0.8675), "n/a" when missing."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return "n/a"
    return f"{value:.4f}"


def fmt_ci(value: Any, ci: dict[str, Any] | None) -> str:
    """0.8675 (95% CI 0.8551–0.8790)."""
    text = fmt_metric(value)
    if ci and text != "n/a" and fmt_metric(ci.get("low")) != "n/a":
        text += f" (95% CI {fmt_metric(ci.get('low'))}–{fmt_metric(ci.get('high'))})"
    return text


def fmt_plain(value: Any) -> str:
    """Config/record fields: lists joined with commas, large ints with thousands separators."""
    if value is None or value == "":
        return "n/a"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) if value else "n/a"
    return str(value)
