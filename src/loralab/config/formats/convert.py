"""`loralab convert FILE --to loralab`: another tool's file written as loralab's experiment YAML, each
mapped key commented with the key it came from, the keys not used listed at the top."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from loralab.config.formats import TOOL_NAMES, Converted, check_format, convert_raw, detect_format
from loralab.config.loader import read_config_file
from loralab.config.schema import load_schemas

_ORDER = (
    "experiment",
    "model",
    "lora",
    "training_args",
    "data",
    "deepspeed",
    "tracking",
    "seed",
    "prefix_cache",
)


def convert_file(path: Path, fmt: str | None = None, out_dir: Path | None = None) -> str:
    """The file at `path` (format `fmt`, else detected) as loralab experiment YAML text. A relative
    DeepSpeed path is rewritten relative to `out_dir` (where the text will be written; default: the
    source's folder), so the written file finds it."""
    source = Path(path).expanduser().absolute()
    raw = read_config_file(source)
    fmt = check_format(fmt, str(path)) if fmt else detect_format(raw, str(path))
    defaults = {name: spec.default for name, spec in load_schemas().training.items()}
    converted = convert_raw(raw, fmt, defaults)
    mapping = dict(converted.mapping)
    ds = mapping.get("deepspeed")
    if fmt == "deepspeed":
        mapping["deepspeed"] = _relative(source, out_dir or source.parent)
    elif isinstance(ds, str) and not Path(ds).expanduser().is_absolute():
        mapping["deepspeed"] = _relative(source.parent / ds, out_dir or source.parent)
    return _header(path, fmt, converted) + _render(mapping, _comments(converted))


def _relative(target: Path, out_dir: Path) -> str:
    return os.path.relpath(target.resolve(), Path(out_dir).expanduser().absolute().resolve())


def _header(path: Path, fmt: str, converted: Converted) -> str:
    lines = [f"# Converted by `loralab convert` from {Path(path).name} ({TOOL_NAMES[fmt]})."]
    if fmt == "loralab":
        lines.append("# Already loralab's format: written back as read.")
    unknown = [n for n in converted.notes if n.startswith("unknown key ")]
    others = [n for n in converted.notes if not n.startswith("unknown key ")]
    if unknown:
        lines.append("# Keys not used:")
        lines += [f"#   {n}" for n in unknown]
    if others:
        lines.append("# Notes:")
        lines += [f"#   {n}" for n in others]
    return "\n".join(lines) + "\n"


def _comments(converted: Converted) -> dict[str, str]:
    out: dict[str, list[str]] = {}
    for their, our in converted.mapped:
        out.setdefault(our, []).append(their)
    comments = {our: "from " + ", ".join(theirs) for our, theirs in out.items()}
    for our, whose in converted.defaults.items():
        comments.setdefault(our, whose)
    return comments


def _scalar(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def _render(mapping: dict[str, Any], comments: dict[str, str], prefix: str = "", indent: int = 0) -> str:
    keys = (
        sorted(mapping, key=lambda k: _ORDER.index(k) if k in _ORDER else len(_ORDER))
        if not prefix
        else mapping
    )
    lines: list[str] = []
    for key in keys:
        value = mapping[key]
        dotted = f"{prefix}.{key}" if prefix else str(key)
        pad = "  " * indent
        comment = f"  # {comments[dotted]}" if dotted in comments else ""
        # Nested sections of loralab's form are written as blocks; a value (even a mapping such as
        # model.quantization or an inline DeepSpeed config) is one flow-style line with its comment.
        if (
            isinstance(value, dict)
            and value
            and (
                dotted in ("model", "lora", "lora.config", "training_args", "data", "experiment", "tracking")
                or (indent == 0 and dotted == "deepspeed")
            )
        ):
            lines.append(f"{pad}{key}:{comment}")
            lines.append(_render(value, comments, dotted, indent + 1).rstrip("\n"))
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}{comment}")
    return "\n".join(lines) + "\n"
