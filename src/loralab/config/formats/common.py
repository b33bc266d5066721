"""What every converter returns, and the small builder they share.

A converter is a pure function: another tool's mapping in, loralab's experiment mapping out (the form
`load_experiment` reads), plus one note per thing worth knowing and the (their key, our key) pairs it
mapped, so `convert` can comment each line and error messages can name the key the user wrote.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from loralab.config.legacy import LEGACY_FIELDS

_LEGACY_NAMES = frozenset(f.old for f in LEGACY_FIELDS)
FORMATS = ("loralab", "axolotl", "llamafactory", "deepspeed", "training_args")
TOOL_NAMES = {
    "loralab": "loralab",
    "axolotl": "Axolotl",
    "llamafactory": "LLaMA-Factory",
    "deepspeed": "DeepSpeed",
    "training_args": "TrainingArguments",
}


@dataclass
class Converted:
    """One converted file. Iterates as (mapping, notes, mapped) so it unpacks like a plain triple."""

    mapping: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    mapped: list[tuple[str, str]] = field(default_factory=list)  # (their key, our dotted key)
    defaults: dict[str, str] = field(default_factory=dict)  # our dotted key -> whose default filled it

    def __iter__(self) -> Iterator[Any]:
        return iter((self.mapping, self.notes, self.mapped))


class Builder:
    """Collects the loralab mapping of one conversion, key by dotted key."""

    def __init__(self, tool: str) -> None:
        self.tool = tool
        self.out: dict[str, Any] = {}
        self.notes: list[str] = []
        self.mapped: list[tuple[str, str]] = []
        self.defaults: dict[str, str] = {}

    def has(self, our: str) -> bool:
        node: Any = self.out
        for part in our.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    def set(self, our: str, value: Any, their: str | None = None) -> None:
        node = self.out
        *parents, last = our.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
        if their is not None:
            self.mapped.append((their, our))

    def default(self, our: str, value: Any, why: str) -> None:
        """Fill `our` with the tool's default when the file did not set it, and say so."""
        if self.has(our):
            return
        self.set(our, value)
        self.defaults[our] = f"{self.tool} default"
        self.notes.append(f"{our}: {value!r} ({self.tool}'s default: {why})")

    def note(self, text: str) -> None:
        self.notes.append(text)

    def unknown(self, key: str) -> None:
        self.notes.append(f"unknown key {key} (from {self.tool}): not used")

    def tool_only(self, key: str, value: Any, what: str) -> None:
        shown = repr(value) if len(repr(value)) <= 120 else repr(value)[:117] + "..."
        self.notes.append(f"{key} (from {self.tool}): {shown}; {what}, meaningful only in {self.tool}")

    def result(self) -> Converted:
        return Converted(self.out, self.notes, self.mapped, self.defaults)


def split_names(value: Any) -> list[str]:
    """LLaMA-Factory's comma-separated module names ("q_proj,v_proj") as a list; a list is kept."""
    if isinstance(value, list):
        return [str(v).strip() for v in value]
    return [part.strip() for part in str(value).split(",") if part.strip()]


def training_key(key: str, training_defaults: Mapping[str, Any]) -> bool:
    """Whether `key` is a TrainingArguments field, current or a transformers-4 name loralab migrates."""
    return key in training_defaults or key in _LEGACY_NAMES
