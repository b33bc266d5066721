"""Shared helpers for the section validators: the problem collector, suggestions, small type checks."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from loralab.config.schema import FieldSpec, choice_matches, readable, value_matches, wants_float_not_str
from loralab.errors import Notes, Problem

# YAML 1.1 (PyYAML) reads `1e-5` as a string because it has no dot; people mean the number.
_FLOAT_TEXT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


@dataclass
class Ctx:
    """What one load collects: every problem (reported together at the end) and the notes."""

    file: str
    base_dir: Path
    problems: list[Problem] = field(default_factory=list)
    notes: Notes = field(default_factory=Notes)

    def problem(self, key: str, message: str, fix: str = "") -> None:
        self.problems.append(Problem(file=self.file, key=key, message=message, fix=fix))

    def note(self, text: str) -> None:
        self.notes.add(text)


def join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def closest(word: str, candidates: Iterable[str]) -> str | None:
    found = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return found[0] if found else None


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "bool", int: "int", float: "float", str: "string", list: "list", dict: "mapping"}.get(
        type(value), type(value).__name__
    )


def unknown_key(ctx: Ctx, prefix: str, key: str, candidates: Iterable[str], what: str, listing: bool) -> None:
    """Report a key that is not allowed, suggesting the closest allowed one."""
    options = sorted(candidates)
    guess = closest(str(key), options)
    if guess is not None:
        ctx.problem(
            join(prefix, str(key)),
            f"unknown {what} `{key}`; did you mean `{guess}`?",
            f"rename `{key}` to `{guess}`",
        )
        return
    fix = (
        f"remove it; allowed: {', '.join(options)}"
        if listing
        else f"remove it (see the {what}s of the library)"
    )
    ctx.problem(join(prefix, str(key)), f"unknown {what} `{key}`", fix)


def as_mapping(ctx: Ctx, key: str, value: Any, example: str) -> dict[str, Any] | None:
    """The value as a dict, or None after reporting that it is not a mapping (null counts as empty)."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    ctx.problem(key, f"expected a mapping, got {type_name(value)} {value!r}", f"write it as `{example}`")
    return None


def check_str(ctx: Ctx, key: str, value: Any) -> bool:
    if isinstance(value, str) and value.strip():
        return True
    ctx.problem(key, f"expected a non-empty string, got {type_name(value)} {value!r}", "quote the value")
    return False


def check_int(ctx: Ctx, key: str, value: Any, minimum: int | None = None) -> bool:
    if isinstance(value, bool) or not isinstance(value, int):
        ctx.problem(key, f"expected an integer, got {type_name(value)} {value!r}", "write a whole number")
        return False
    if minimum is not None and value < minimum:
        ctx.problem(key, f"must be >= {minimum}, got {value}", f"use a value of at least {minimum}")
        return False
    return True


def check_bool(ctx: Ctx, key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return True
    ctx.problem(key, f"expected true or false, got {type_name(value)} {value!r}", "write true or false")
    return False


def is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def coerce_float_text(ctx: Ctx, key: str, value: Any, spec: FieldSpec) -> Any:
    """'1e-5' -> 1e-05 where the field takes a float and no string, with a note."""
    if isinstance(value, str) and _FLOAT_TEXT.match(value.strip()) and wants_float_not_str(spec.type):
        number = float(value)
        ctx.note(f"{key}: {value!r} read as {number!r} (YAML reads exponents without a dot as text)")
        return number
    return value


def check_against_spec(ctx: Ctx, key: str, value: Any, spec: FieldSpec, owner: str) -> bool:
    """Type and choice check of one value against its snapshot field; reports and returns False if wrong."""
    str_choices = [c for c in spec.choices or () if isinstance(c, str)]
    if isinstance(value, str) and str_choices and not any(choice_matches(value, c) for c in str_choices):
        # A choice list says more than "expects Literal[...]" and lets us suggest the closest value.
        guess = closest(value, str_choices)
        hint = f"; did you mean `{guess}`?" if guess else ""
        ctx.problem(
            key,
            f"`{value}` is not a valid {owner}.{spec.name}{hint}",
            f"use one of: {', '.join(str_choices)}"
            if len(str_choices) <= 20
            else f"use e.g. {guess or str_choices[0]}",
        )
        return False
    if not value_matches(value, spec.type):
        ctx.problem(
            key,
            f"{owner}.{spec.name} expects {readable(spec.type)}, got {type_name(value)} {value!r}",
            f"give a value of type {readable(spec.type)}",
        )
        return False
    return True


def check_mapping_fields(
    ctx: Ctx, prefix: str, mapping: Mapping[str, Any], specs: Mapping[str, FieldSpec], owner: str
) -> dict[str, Any]:
    """Check every key of `mapping` against `specs`; returns the mapping with float text coerced."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        path = join(prefix, str(key))
        spec = specs.get(str(key))
        if spec is None:
            unknown_key(ctx, prefix, str(key), specs, f"{owner} field", listing=False)
            continue
        value = coerce_float_text(ctx, path, value, spec)
        check_against_spec(ctx, path, value, spec, owner)
        out[str(key)] = value
    return out
