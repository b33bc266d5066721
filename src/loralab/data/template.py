"""Turning a row into model text: `text_field` alone, or a `str.format`-style `text_template`.

Templates are validated once (`compile_template`) with `string.Formatter().parse`. Only plain column
names are allowed as fields (`{거래처}`, `{amount:,}`), not `{0}`, `{a.b}`, `{a[0]}` or nested specs.
A field whose format spec is numeric (`,` `_` grouping, or a type among `bdeEfFgGnoxX%`) gets its value
converted from a numeric-looking string first, so CSV's "1500000" under `{amount:,}` gives "1,500,000".
"""

from __future__ import annotations

import difflib
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from loralab.data.errors import RowValueError
from loralab.errors import ConfigError, Problem

NUMERIC_TYPES = set("bdeEfFgGnoxX%")
_INT_RE = re.compile(r"^[+-]?\d+$")
_GROUPED_RE = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$")
_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def is_numeric_spec(spec: str) -> bool:
    """Whether a format spec only makes sense for numbers."""
    if not spec:
        return False
    if spec[-1] in NUMERIC_TYPES:
        return True
    return spec[-1] not in "sc" and ("," in spec or "_" in spec)


def to_number(value: str) -> int | float | None:
    """A numeric-looking string as int/float ("1500000", "-3.5", "1,500,000"); None when not numeric."""
    s = value.strip()
    if _GROUPED_RE.match(s):
        s = s.replace(",", "")
    if _INT_RE.match(s):
        return int(s)
    if _FLOAT_RE.match(s):
        return float(s)
    return None


def closest(name: str, options: Sequence[str]) -> str | None:
    """The option most like `name`, if any is close enough."""
    found = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return found[0] if found else None


def missing_field_problem(name: str, columns: Sequence[str], file: str, key: str) -> Problem:
    """A problem naming a missing field, listing the available columns and the closest one."""
    guess = closest(name, columns)
    fix = f"did you mean '{guess}'?" if guess else "use one of the available columns"
    listed = ", ".join(columns) if columns else "(none)"
    return Problem(file, key, f"field '{name}' is not a column; available columns: {listed}", fix)


@dataclass(frozen=True)
class Template:
    """A validated template: literal text and (field, format spec, conversion) pieces."""

    source: str
    pieces: tuple[tuple[str, str | None, str, str | None], ...]

    @property
    def fields(self) -> list[str]:
        """Field names in order of first use."""
        seen: list[str] = []
        for _, name, _, _ in self.pieces:
            if name is not None and name not in seen:
                seen.append(name)
        return seen

    def check_columns(
        self, columns: Sequence[str], file: str = "<data>", key: str = "data.text_template"
    ) -> None:
        """Raise a ConfigError for every template field that is not among `columns`."""
        problems = [missing_field_problem(f, columns, file, key) for f in self.fields if f not in columns]
        if problems:
            raise ConfigError(problems)

    def render(self, row: Mapping[str, Any]) -> str:
        """The template filled from `row`; RowValueError when a value cannot take its format spec."""
        missing = [f for f in self.fields if f not in row]
        if missing:
            self.check_columns(list(row))
        out: list[str] = []
        for literal, name, spec, conversion in self.pieces:
            out.append(literal)
            if name is None:
                continue
            out.append(_format_value(name, row[name], spec, conversion))
        return "".join(out)


def _format_value(name: str, value: Any, spec: str, conversion: str | None) -> str:
    if value is None:
        raise RowValueError(f"field '{name}' is missing (null)", kind="missing-field")
    if conversion == "r":
        value = repr(value)
    elif conversion == "a":
        value = ascii(value)
    elif conversion == "s":
        value = str(value)
    elif isinstance(value, str) and is_numeric_spec(spec):
        number = to_number(value)
        if number is None:
            raise RowValueError(
                f"field '{name}' value {value!r} is not a number (format ':{spec}')", "bad-number"
            )
        value = number
    try:
        return format(value, spec)
    except (ValueError, TypeError) as e:
        raise RowValueError(
            f"field '{name}' value {value!r} cannot take format ':{spec}': {e}", "bad-number"
        ) from e


def compile_template(template: str, key: str = "data.text_template") -> Template:
    """Parse and validate a template once; a ConfigError lists everything wrong with it."""
    problems: list[Problem] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ConfigError(
            [Problem("<config>", key, f"template cannot be parsed: {e}", "balance { and }")]
        ) from e
    pieces: list[tuple[str, str | None, str, str | None]] = []
    for literal, name, spec, conversion in parsed:
        if name is not None:
            if name == "" or name.isdigit() or any(c in name for c in ".["):
                problems.append(
                    Problem(
                        "<config>", key, f"field '{{{name}}}' is not a plain column name", "write {column}"
                    )
                )
            if spec and "{" in spec:
                problems.append(Problem("<config>", key, f"nested format spec in '{{{name}:{spec}}}'", ""))
        pieces.append((literal, name, spec or "", conversion))
    if not any(name is not None for _, name, _, _ in pieces):
        problems.append(Problem("<config>", key, "template names no field", "add at least one {column}"))
    if problems:
        raise ConfigError(problems)
    return Template(template, tuple(pieces))


def render(template: str | Template, row: Mapping[str, Any]) -> str:
    """Render one row with a template (a string is compiled first)."""
    compiled = template if isinstance(template, Template) else compile_template(template)
    return compiled.render(row)
