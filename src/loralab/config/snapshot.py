"""Generate the field snapshot of PEFT's `LoraConfig` and transformers' `TrainingArguments`.

Validation must use the real dataclasses, but importing either library imports torch (6-8 s), and
`loralab plan` has to answer in under a second. So this module imports them once, records each field's
annotation, default and choices in `schemas/fields.json`, and `loralab.config.schema` validates against
that file torch-free. Run it after upgrading peft or transformers:

    python -m loralab.config.snapshot            # rewrites the shipped src/loralab/config/schemas/fields.json
    python -m loralab.config.snapshot --out PATH # writes elsewhere (the loader uses this for its cache)

Annotation strings use one grammar (`int | None`, `list[str]`, `Literal['a', 'b']`, dotted class names)
whatever style the library wrote them in, so the torch-free checker can parse them with `ast`.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import sys
import types
import typing
from importlib.metadata import version
from pathlib import Path
from typing import Any

from loralab.config.schema import SHIPPED_PATH

__all__ = [
    "SHIPPED_PATH",
    "build_snapshot",
    "describe_dataclass",
    "dump_snapshot",
    "format_annotation",
    "main",
]


def format_annotation(tp: Any) -> str:
    """Render a type annotation in the grammar `loralab.config.schema` parses."""
    if tp is type(None) or tp is None:
        return "None"
    if tp is typing.Any:
        return "Any"
    if isinstance(tp, str):  # an unresolved forward reference; the checker accepts unknown names
        return tp
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Literal:
        return "Literal[" + ", ".join(repr(a) for a in _literal_values(args)) + "]"
    if origin is typing.Union or origin is types.UnionType:
        # typing caches Unions and treats member order as irrelevant (Union[A, B] == Union[B, A]), so the
        # order it reports depends on what the process built first; sort it for a reproducible snapshot.
        parts = sorted({format_annotation(a) for a in args}, key=lambda s: (s == "None", s))
        return " | ".join(parts)
    if origin is not None:
        name = origin.__name__ if origin.__module__ == "builtins" else _qualname(origin)
        if not args:
            return name
        return name + "[" + ", ".join("..." if a is Ellipsis else format_annotation(a) for a in args) + "]"
    if isinstance(tp, type):
        return tp.__name__ if tp.__module__ == "builtins" else _qualname(tp)
    return str(tp)


def _literal_values(args: tuple[Any, ...]) -> list[Any]:
    # Literal, like Union, compares equal whatever the order and is cached, so its order is not stable.
    values = [a.value if isinstance(a, enum.Enum) else a for a in args]
    return sorted(values, key=lambda v: (type(v).__name__, repr(v)))


def _qualname(tp: Any) -> str:
    return f"{getattr(tp, '__module__', '')}.{getattr(tp, '__qualname__', repr(tp))}".lstrip(".")


def _top_members(tp: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(tp)
    return (tp,)


def _choices(tp: Any, metadata: Any) -> list[Any] | None:
    """Allowed values: Literal members, values of an Enum in the union, or the field's metadata choices.

    transformers converts `IntervalStrategy | str` fields with `IntervalStrategy(value)` in `__post_init__`,
    so the enum's values are the real set of accepted strings even though the annotation says `str`.
    """
    found: list[Any] = []
    for member in _top_members(tp):
        if typing.get_origin(member) is typing.Literal:
            found.extend(_literal_values(typing.get_args(member)))
        elif isinstance(member, type) and issubclass(member, enum.Enum):
            found.extend(m.value for m in member)
    meta = metadata.get("choices") if metadata else None
    if meta is not None:
        found.extend(v for v in list(meta) if v not in found)
    return found or None


def _jsonable_default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        try:
            value = f.default_factory()
        except Exception:  # a factory that needs runtime state has no JSON form; null means "library default"
            return None
    else:
        return None
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, tuple):
        value = list(value)
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return None
    return value


def describe_dataclass(cls: type) -> dict[str, dict[str, Any]]:
    """Field name -> {"type", "default", "choices"?} for every init field of a dataclass."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an unresolvable forward reference somewhere; fall back to the raw annotations
        hints = {}
    out: dict[str, dict[str, Any]] = {}
    for f in dataclasses.fields(cls):
        if not f.init or f.name.startswith("_"):
            continue
        tp = hints.get(f.name, f.type)
        entry: dict[str, Any] = {"type": format_annotation(tp), "default": _jsonable_default(f)}
        choices = _choices(tp, f.metadata)
        if choices is not None:
            entry["choices"] = choices
        out[f.name] = entry
    return out


def build_snapshot() -> dict[str, Any]:
    """Import peft and transformers (slow: pulls in torch) and describe the two dataclasses."""
    # peft/transformers: seconds to import; only a snapshot rebuild reads them
    from peft import LoraConfig
    from transformers import TrainingArguments

    return {
        "peft": version("peft"),
        "transformers": version("transformers"),
        "LoraConfig": describe_dataclass(LoraConfig),
        "TrainingArguments": describe_dataclass(TrainingArguments),
    }


def dump_snapshot(snapshot: dict[str, Any]) -> str:
    return json.dumps(snapshot, indent=1, ensure_ascii=False) + "\n"


def write_snapshot(path: Path) -> dict[str, Any]:
    snapshot = build_snapshot()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    # Written then renamed so a concurrent reader never sees half a file.
    tmp.write_text(dump_snapshot(snapshot), encoding="utf-8")
    tmp.replace(path)
    return snapshot


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--out", type=Path, default=SHIPPED_PATH, help="where to write (default: shipped file)"
    )
    args = parser.parse_args(argv)
    snapshot = write_snapshot(args.out)
    print(
        f"wrote {args.out}: peft {snapshot['peft']} ({len(snapshot['LoraConfig'])} LoraConfig fields), "
        f"transformers {snapshot['transformers']} "
        f"({len(snapshot['TrainingArguments'])} TrainingArguments fields)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
