"""Which columns of a training file hold the text and the label (or the prompt and the response), read
the way `train` reads them, for `loralab recommend --data FILE`.

Names decide first (the column names the Hugging Face datasets our users start from use: `text`,
`label`, `category`, `prompt`, `response`, `article`, `summary`, ...); with two columns and one of
them named, the other is its partner. When the columns say nothing, the choice is refused with one
line listing the columns found and the flags that settle it: a wrong guess would train on the wrong
field for hours, which costs more than one more flag.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from loralab.data.readers import RowSet, read_rows
from loralab.data.template import missing_field_problem
from loralab.errors import ConfigError, Problem

TEXT_NAMES = ("text", "sentence", "content", "utterance", "description", "query", "question", "input")
LABEL_NAMES = ("label", "labels", "category", "class", "intent", "target", "y", "source", "topic")
PROMPT_NAMES = ("prompt", "instruction", "input", "question", "query", "article", "document", "dialogue")
RESPONSE_NAMES = ("response", "output", "answer", "completion", "summary", "title", "highlights", "target")
_TRAIN = re.compile(r"train(ing)?", re.IGNORECASE)


@dataclass
class DataFields:
    """What `--data FILE` fills: data.* keys, the label count and the rows, each with how it was found."""

    file: Path
    fields: dict[str, str]  # data.text_field / label_field or prompt_field / response_field -> column
    columns: list[str]
    rows: int
    num_labels: int | None = None
    test_file: Path | None = None
    how: dict[str, str] = field(default_factory=dict)  # key -> "named", "given", "the other column"


def _columns(path: Path) -> tuple[RowSet, list[str]]:
    rowset = read_rows(path)
    if rowset.columns:
        return rowset, list(rowset.columns)
    seen: dict[str, None] = {}
    for r in rowset.rows[:1000]:  # JSON lines: the keys of the first rows, in order
        seen.update(dict.fromkeys(r.fields))
    return rowset, list(seen)


def _pick(columns: list[str], names: tuple[str, ...], taken: set[str]) -> str | None:
    lowered = {c.lower(): c for c in columns if c not in taken}
    for n in names:
        if n in lowered:
            return lowered[n]
    return None


def _refuse(path: Path, keys: tuple[str, str], columns: list[str]) -> ConfigError:
    flags = " and ".join("--" + k.split(".")[-1].replace("_", "-") for k in keys)
    return ConfigError(
        [
            Problem(
                str(path),
                keys[0],
                f"cannot tell which column is which among: {', '.join(columns) or '(none)'}",
                f"pass {flags}",
            )
        ]
    )


def _pair(
    path: Path,
    columns: list[str],
    keys: tuple[str, str],
    names: tuple[tuple[str, ...], ...],
    given: list[str | None],
) -> tuple[dict[str, str], dict[str, str]]:
    """Two roles (text+label or prompt+response): given, else named, else the only other column."""
    chosen: dict[str, str] = {}
    how: dict[str, str] = {}
    for key, value in zip(keys, given, strict=True):
        if value is not None:
            if value not in columns:
                raise ConfigError([missing_field_problem(value, columns, str(path), key)])
            chosen[key], how[key] = value, "given"
    for key, candidates in zip(keys, names, strict=True):
        if key not in chosen:
            hit = _pick(columns, candidates, set(chosen.values()))
            if hit is not None:
                chosen[key], how[key] = hit, "by its name"
    missing = [k for k in keys if k not in chosen]
    rest = [c for c in columns if c not in chosen.values()]
    if len(missing) == 1 and len(rest) == 1:
        chosen[missing[0]], how[missing[0]] = rest[0], "the only other column"
    elif missing:
        raise _refuse(path, keys, columns)
    return chosen, how


def lm_read_fields(
    *,
    prompt_field: str | None,
    text_field: str | None,
    text_template: str | None,
    response_field: str | None,
    label_field: str | None,
) -> tuple[str | None, str | None, str] | None:
    """How an LM task (causal-lm, seq2seq) reads a data file: (text_field, text_template, label_field)
    for `read_rows`, the prompt (else text_field, else the template) as the text and the response (else
    label_field) as the label; None when the prompt or the response is missing. Train and
    `recommend --validate` both read by it."""
    response = response_field or label_field
    prompt = prompt_field or text_field
    if not response or not (prompt or text_template):
        return None
    return prompt, None if prompt else text_template, response


def sibling_test_file(path: Path) -> Path | None:
    """`train.csv` -> `test.csv`, `x-train.jsonl` -> `x-test.jsonl`, when that file exists."""
    if not _TRAIN.search(path.name):
        return None
    other = path.with_name(_TRAIN.sub("test", path.name, count=1))
    return other if other.is_file() and other.resolve() != path.resolve() else None


def data_fields(
    path: str | Path,
    task: str,
    *,
    text_field: str | None = None,
    label_field: str | None = None,
    prompt_field: str | None = None,
    response_field: str | None = None,
) -> DataFields:
    """The data.* fields, rows and label count of a training file, read as `train` reads it."""
    p = Path(path)
    _, columns = _columns(p)
    if task == "seq-cls":
        keys = ("data.text_field", "data.label_field")
        chosen, how = _pair(p, columns, keys, (TEXT_NAMES, LABEL_NAMES), [text_field, label_field])
        rowset = read_rows(p, text_field=chosen[keys[0]], label_field=chosen[keys[1]])
        n_labels: int | None = len(set(rowset.labels))
    else:
        keys = ("data.prompt_field", "data.response_field")
        chosen, how = _pair(p, columns, keys, (PROMPT_NAMES, RESPONSE_NAMES), [prompt_field, response_field])
        # the prompt is the row's text and the response its target, as train.tasks reads them
        rowset = read_rows(p, text_field=chosen[keys[0]], label_field=chosen[keys[1]])
        n_labels = None
    return DataFields(
        file=p.resolve(),
        fields=chosen,
        columns=columns,
        rows=len(rowset.rows),
        num_labels=n_labels,
        test_file=sibling_test_file(p),
        how=how,
    )
