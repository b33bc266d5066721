"""The label map (label <-> id), built from the training rows, and encoding rows against it.

Ids follow the sorted order of the training labels (plain string sort), so the same training set always
gives the same map. Evaluation rows whose label never occurs in training are left out of the encoded
set and counted in `Encoded.unseen` (with the first line of each), not crashed on; `unseen_note` says
so in one line. Labels that are one class id written two ways ("1" and "1.0") are an error, since they
would train as two classes: `check_label_aliases` names their lines, `build_label_map` refuses them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from loralab.config.models import ExperimentConfig
from loralab.data.errors import DataError
from loralab.data.readers import Row, RowSet, read_rows
from loralab.data.values import integer_float_aliases
from loralab.errors import ConfigError, Problem
from loralab.io import write_json


@dataclass(frozen=True)
class LabelMap:
    """Label names in id order; `label2id` / `id2label` as transformers' configs spell them."""

    labels: tuple[str, ...]

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))

    def __len__(self) -> int:
        return len(self.labels)

    def to_json(self) -> dict[str, dict[str, int] | dict[str, str]]:
        return {"label2id": self.label2id, "id2label": {str(i): lab for i, lab in self.id2label.items()}}

    def save(self, path: str | Path) -> None:
        save_label_map(self, path)


def infer_num_labels(cfg: ExperimentConfig) -> tuple[int, str]:
    """(distinct labels in data.train_file, a note saying so) for a seq-cls config without num_labels.

    Every class of the training file trains: `extract` and the validation split keep at least one row
    of each class in training, so this is the size of the label map `train` builds.
    """
    d = cfg.data
    if not d.train_file or not d.label_field:
        raise ConfigError(
            [
                Problem(
                    str(cfg.source),
                    "model.num_labels",
                    "is not set and there is no data.train_file / data.label_field to infer it from",
                    "set model.num_labels",
                )
            ]
        )
    path = cfg.resolve_path(d.train_file)
    rowset = read_rows(path, label_field=d.label_field)
    check_label_aliases(rowset)
    n = len(set(rowset.labels))
    if n < 2:
        raise ConfigError(
            [
                Problem(
                    str(path),
                    d.label_field,
                    f"has {n} distinct label(s); classification needs at least 2",
                    "check data.label_field and the file",
                )
            ]
        )
    return n, f"model.num_labels: {n} (inferred from the {d.label_field!r} labels of {path.name})"


def check_label_aliases(rowset: RowSet) -> None:
    """Refuse class labels that are one number written two ways ("1" and "1.0"), naming their lines.

    Only for classification: a generation response "1" beside "1.0" is two different texts.
    """
    first_line: dict[str, int] = {}
    for row in rowset.rows:
        if row.label is not None:
            first_line.setdefault(row.label, row.line)
    pairs = integer_float_aliases(first_line)
    if pairs:
        listed = "; ".join(f"'{a}' (line {first_line[a]}) and '{b}' (line {first_line[b]})" for a, b in pairs)
        raise DataError(
            f"{rowset.file}:{first_line[pairs[0][1]]}: labels {listed} are one class id written two ways "
            "and would train as separate classes (fix: write each class one way, e.g. as an integer)"
        )


def build_label_map(labels: Iterable[str]) -> LabelMap:
    """The map of the distinct labels, sorted; "1" beside "1.0" is refused (see check_label_aliases)."""
    distinct = sorted(set(labels))
    if not distinct:
        raise DataError("cannot build a label map: the training rows have no labels")
    pairs = integer_float_aliases(distinct)
    if pairs:
        listed = "; ".join(f"'{a}' and '{b}'" for a, b in pairs)
        raise DataError(
            f"training labels {listed} are one class id written two ways and would train as separate "
            "classes (fix: write each class one way in the data file, e.g. as an integer)"
        )
    return LabelMap(tuple(distinct))


def save_label_map(label_map: LabelMap, path: str | Path) -> None:
    """Write `{"label2id": {...}, "id2label": {"0": ...}}` as UTF-8 JSON (Hangul kept as is)."""
    write_json(Path(path), label_map.to_json())


def load_label_map(path: str | Path) -> LabelMap:
    """Read a map written by `save_label_map`; ids must be 0..n-1 and agree in both directions."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        id2label = {int(k): str(v) for k, v in data["id2label"].items()}
        label2id = {str(k): int(v) for k, v in data["label2id"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise DataError(f"{p}: not a label map ({type(e).__name__}: {e})") from e
    if sorted(id2label) != list(range(len(id2label))):
        raise DataError(f"{p}: label ids are not 0..{len(id2label) - 1}")
    label_map = LabelMap(tuple(id2label[i] for i in range(len(id2label))))
    if label_map.label2id != label2id:
        raise DataError(f"{p}: label2id and id2label disagree")
    return label_map


@dataclass
class Encoded:
    """Rows whose label is in the map, with their ids; the unseen labels and how often each occurred."""

    rows: list[Row] = field(default_factory=list)
    label_ids: list[int] = field(default_factory=list)
    unseen: dict[str, int] = field(default_factory=dict)
    unseen_lines: list[int] = field(default_factory=list)
    unseen_first_line: dict[str, int] = field(default_factory=dict)

    @property
    def unseen_count(self) -> int:
        return sum(self.unseen.values())

    def unseen_summary(self) -> str:
        if not self.unseen:
            return "no unseen labels"
        listed = ", ".join(f"{lab} ({n})" for lab, n in sorted(self.unseen.items()))
        return f"{self.unseen_count} rows with labels not in training, left out: {listed}"


def encode_rows(rows: Sequence[Row], label_map: LabelMap) -> Encoded:
    """Label ids for rows whose label is in `label_map`; the others are reported in `unseen`."""
    ids = label_map.label2id
    out = Encoded()
    unseen: Counter[str] = Counter()
    for row in rows:
        if row.label is not None and row.label in ids:
            out.rows.append(row)
            out.label_ids.append(ids[row.label])
        else:
            unseen[str(row.label)] += 1
            out.unseen_lines.append(row.line)
            out.unseen_first_line.setdefault(str(row.label), row.line)
    out.unseen = dict(sorted(unseen.items()))
    return out


def unseen_note(file: str | Path, encoded: Encoded, limit: int = 5) -> str | None:
    """One line naming the labels of `file` that training never saw, with counts and first lines.

    Those rows cannot be scored as anything but wrong, so they are left out of evaluation; None when
    every label was seen.
    """
    if not encoded.unseen:
        return None
    items = sorted(encoded.unseen.items(), key=lambda kv: (-kv[1], kv[0]))
    listed = ", ".join(
        f"'{lab}' ({n} row{'s' if n != 1 else ''}, first at line {encoded.unseen_first_line[lab]})"
        for lab, n in items[:limit]
    )
    if len(items) > limit:
        listed += f" and {len(items) - limit} more"
    n = encoded.unseen_count
    return (
        f"{file}: {n} row{'s' if n != 1 else ''} with labels that never occur in training, left out of "
        f"evaluation: {listed}"
    )
