"""What a cell may hold: the rules that turn a JSON/Parquet value into a label or a text, or refuse it.

CSV and TSV cells are always strings; JSON lines and Parquet carry types, and a value of the wrong type
is almost always a wrong column or a nested record, never something to stringify. The rules, shared by
the training readers and `evaluate --predictions` so both agree on what a class is:

- text (`text_field`): a string. A number, true/false, an object or a list is refused ("not-text").
- template fields: a string, number or true/false. An object or list is refused ("not-a-scalar").
- labels: a string, an integer, an integral float or true/false. The integer 1, the float 1.0 and the
  string "1" are the same class "1" (a pandas column of class ids with a gap is stored as float64);
  true/false become "true"/"false" as JSON spells them. A non-integral float keeps its shortest form
  ("3.5"). NaN is a missing label, like null. Objects, lists and infinities are refused ("not-a-scalar").
  Labels (and so causal-lm/seq2seq responses, read through `label_field`) are stripped and put in
  Unicode NFC, so a Hangul label typed on macOS (NFD) and the same label typed on Windows (NFC) are one
  class, as they look.
- where labels are classes (`labels.check_label_aliases`, `build_label_map`, `evaluate --predictions`),
  "1" beside "1.0" (or "1.00") is an error: one class id written two ways would count as two classes
  (`integer_float_aliases`). "1.1" beside "1.10" is not flagged, since section-style labels differ that
  way on purpose; a generation response "1" beside "1.0" is two texts and is not checked.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable
from typing import Any

from loralab.data.errors import RowValueError

_FLOAT_OF_INT = re.compile(r"^([+-]?\d+)\.0+$")


def _type_name(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__


def _shown(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def label_value(value: Any, field: str = "label") -> str | None:
    """The class name of a raw label value; None when it is missing (null, NaN, empty after strip)."""
    if value is None:
        return None
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            raise RowValueError(f"'{field}' is {value}, not a class", "not-a-scalar")
        text = str(int(value)) if value.is_integer() else repr(value)
    elif isinstance(value, str):
        text = value
    else:
        raise RowValueError(
            f"'{field}' is {_type_name(value)} ({_shown(value)}), not a class name", "not-a-scalar"
        )
    text = unicodedata.normalize("NFC", text.strip())
    return text or None


def text_value(value: Any, field: str) -> str:
    """A text cell as it is; anything but a string is refused (the caller has checked for null)."""
    if isinstance(value, str):
        return value
    kind = "not-a-scalar" if isinstance(value, dict | list | tuple) else "not-text"
    raise RowValueError(f"'{field}' is {_type_name(value)} ({_shown(value)}), not text", kind)


def check_template_value(value: Any, field: str) -> None:
    """Refuse an object or list under a template field; strings, numbers and true/false format fine."""
    if isinstance(value, dict | list | tuple):
        raise RowValueError(
            f"'{field}' is {_type_name(value)} ({_shown(value)}), not a value a template can show",
            "not-a-scalar",
        )


def integer_float_aliases(labels: Iterable[str]) -> list[tuple[str, str]]:
    """Pairs (integer form, float form) such as ("1", "1.0") that both occur among `labels`."""
    present = set(labels)
    pairs = []
    for label in sorted(present):
        m = _FLOAT_OF_INT.match(label)
        if m and m.group(1) in present:
            pairs.append((m.group(1), label))
    return pairs
