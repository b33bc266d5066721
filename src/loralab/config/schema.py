"""Torch-free access to the LoraConfig / TrainingArguments field snapshot, and value checks against it.

The shipped `schemas/fields.json` was generated from the installed peft and transformers by
`python -m loralab.config.snapshot`. When the installed versions differ from the snapshot's, a snapshot
for the installed pair is generated once (in a subprocess, so this process never imports torch) into
`$LORALAB_CACHE_DIR` (default `~/.cache/loralab`) and reused after that.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

SHIPPED_PATH = Path(__file__).with_name("schemas") / "fields.json"
_REGEN_TIMEOUT_S = 600


@dataclass(frozen=True)
class FieldSpec:
    """One dataclass field as the snapshot records it."""

    name: str
    type: str  # annotation in the grammar of `snapshot.format_annotation`
    default: Any = None
    choices: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class Schemas:
    """Field specs of `peft.LoraConfig` and `transformers.TrainingArguments` for one library pair."""

    peft_version: str
    transformers_version: str
    lora: dict[str, FieldSpec]
    training: dict[str, FieldSpec]
    source: Path
    notes: tuple[str, ...] = field(default_factory=tuple)  # e.g. "installed versions differ, regen failed"

    @classmethod
    def from_json(cls, data: dict[str, Any], source: Path, notes: tuple[str, ...] = ()) -> Schemas:
        return cls(
            peft_version=str(data["peft"]),
            transformers_version=str(data["transformers"]),
            lora=_specs(data["LoraConfig"]),
            training=_specs(data["TrainingArguments"]),
            source=source,
            notes=notes,
        )


def _specs(raw: dict[str, dict[str, Any]]) -> dict[str, FieldSpec]:
    out: dict[str, FieldSpec] = {}
    for name, entry in raw.items():
        choices = entry.get("choices")
        out[name] = FieldSpec(name, entry["type"], entry.get("default"), tuple(choices) if choices else None)
    return out


def cache_dir() -> Path:
    return Path(os.environ.get("LORALAB_CACHE_DIR") or Path.home() / ".cache" / "loralab").expanduser()


def installed_versions() -> tuple[str | None, str | None]:
    """(peft, transformers) versions from package metadata; reading metadata does not import them."""
    found: list[str | None] = []
    for dist in ("peft", "transformers"):
        try:
            found.append(version(dist))
        except PackageNotFoundError:
            found.append(None)
    return found[0], found[1]


def _read(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _regenerate(target: Path) -> str | None:
    """Write a snapshot for the installed libraries to `target`; returns an error text or None."""
    env = dict(os.environ)
    src_root = str(Path(__file__).resolve().parents[2])  # the folder holding the `loralab` package
    env["PYTHONPATH"] = src_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "loralab.config.snapshot", "--out", str(target)],
            capture_output=True,
            text=True,
            timeout=_REGEN_TIMEOUT_S,
            env=env,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()
        return tail[-1] if tail else f"exit status {proc.returncode}"
    return None


def load_schemas() -> Schemas:
    """The snapshot matching the installed peft/transformers (shipped, cached, or generated now)."""
    peft_v, tf_v = installed_versions()
    return _load_schemas_cached(peft_v, tf_v, str(cache_dir()))


@functools.lru_cache(maxsize=8)
def _load_schemas_cached(peft_v: str | None, tf_v: str | None, cache: str) -> Schemas:
    shipped = _read(SHIPPED_PATH)
    # Without the libraries installed there is nothing newer to compare with; the shipped file is the best
    # description of what a later install will accept.
    if peft_v is None or tf_v is None or (shipped["peft"], shipped["transformers"]) == (peft_v, tf_v):
        return Schemas.from_json(shipped, SHIPPED_PATH)
    target = Path(cache) / f"fields-peft{peft_v}-transformers{tf_v}.json"
    if target.is_file():
        try:
            cached = _read(target)
            if (cached["peft"], cached["transformers"]) == (peft_v, tf_v):
                return Schemas.from_json(cached, target)
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache file is regenerated below
    error = _regenerate(target)
    if error is None:
        return Schemas.from_json(_read(target), target)
    note = (
        f"validated against the field snapshot for peft {shipped['peft']} / transformers "
        f"{shipped['transformers']}, but peft {peft_v} / transformers {tf_v} are installed and regenerating "
        f"the snapshot failed ({error}); run `python -m loralab.config.snapshot --out {target}`"
    )
    return Schemas.from_json(shipped, SHIPPED_PATH, notes=(note,))


# --- value checks ---------------------------------------------------------------------------------

_BUILTIN_CHECKS: dict[str, Any] = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    # YAML ints are fine where a float is expected; bools are ints to Python but never meant as numbers.
    "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "None": lambda v: v is None,
    "NoneType": lambda v: v is None,
    "dict": lambda v: isinstance(v, dict),
    "Dict": lambda v: isinstance(v, dict),
    "list": lambda v: isinstance(v, list),
    "List": lambda v: isinstance(v, list),
    "tuple": lambda v: isinstance(v, list | tuple),
    "Tuple": lambda v: isinstance(v, list | tuple),
}
_LIST_NAMES = {"list", "List", "Sequence", "set", "Set"}
_TUPLE_NAMES = {"tuple", "Tuple"}
_DICT_NAMES = {"dict", "Dict", "Mapping"}


@functools.lru_cache(maxsize=512)
def _parse(annotation: str) -> ast.expr | None:
    try:
        return ast.parse(annotation, mode="eval").body
    except SyntaxError:
        return None


def _name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr  # `typing.Optional` and `typing.List` behave as their last part
    return None


def _literal_matches(value: Any, node: ast.expr) -> bool:
    members = node.elts if isinstance(node, ast.Tuple) else [node]
    for member in members:
        try:
            allowed = ast.literal_eval(member)
        except ValueError:
            return True  # a Literal of something we cannot evaluate: accept rather than guess
        if choice_matches(value, allowed):
            return True
    return False


def choice_matches(value: Any, allowed: Any) -> bool:
    """Equality that keeps True apart from 1, and reads `'pissa_niter_[number of iters]'` as a pattern."""
    if type(value) is not type(allowed):
        return False
    if isinstance(allowed, str) and "[" in allowed and allowed.endswith("]"):
        return value.startswith(allowed[: allowed.index("[")]) and len(value) > allowed.index("[")
    return bool(value == allowed)


def _subscript_matches(value: Any, base: str | None, args: list[ast.expr]) -> bool:
    if base == "Optional":
        return value is None or _matches(value, args[0])
    if base == "Union":
        return any(_matches(value, a) for a in args)
    if base in _LIST_NAMES:
        return isinstance(value, list) and all(_matches(v, args[0]) for v in value)
    if base in _TUPLE_NAMES:
        if not isinstance(value, list | tuple):
            return False
        if len(args) == 2 and isinstance(args[1], ast.Constant) and args[1].value is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args, strict=True))
    if base in _DICT_NAMES:
        if not isinstance(value, dict):
            return False
        if len(args) != 2:
            return True
        return all(_matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items())
    return True  # an unknown generic (a library class): accept


def _matches(value: Any, node: ast.expr) -> bool:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _matches(value, node.left) or _matches(value, node.right)
    if isinstance(node, ast.Constant):
        if node.value is None:
            return value is None
        return True  # a forward reference written as a string: unknown form, accept
    if isinstance(node, ast.Subscript):
        base = _name(node.value)
        if base == "Literal":
            return _literal_matches(value, node.slice)
        args = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
        return _subscript_matches(value, base, args)
    name = _name(node)
    check = _BUILTIN_CHECKS.get(name or "")
    if check is not None:
        return bool(check(value))
    return True  # Any, or a library class (LoftQConfig, IntervalStrategy...): accept


def value_matches(value: Any, annotation: str) -> bool:
    """Whether a YAML value fits an annotation string; unknown annotation forms accept anything."""
    node = _parse(annotation)
    return True if node is None else _matches(value, node)


def wants_float_not_str(annotation: str) -> bool:
    """True when the annotation takes a float but no string, so a string like '1e-5' is a YAML slip."""
    return value_matches(0.5, annotation) and not value_matches("\x00", annotation)


def readable(annotation: str) -> str:
    """The annotation without module prefixes, for messages."""
    return re.sub(r"\b(?:[A-Za-z_]\w*\.)+([A-Za-z_]\w*)", r"\1", annotation)
