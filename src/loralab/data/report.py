"""A short summary of what was read: rows, bad rows by kind, class sizes, unseen labels."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from loralab.data.labels import Encoded
from loralab.data.readers import RowSet


@dataclass
class DatasetReport:
    """What one data file gave; `str(report)` prints it as a few lines."""

    file: str
    rows_read: int
    bad_rows: dict[str, int] = field(default_factory=dict)  # kind -> count
    num_classes: int = 0
    min_class: tuple[str, int] | None = None
    max_class: tuple[str, int] | None = None
    unseen_labels: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_rowset(cls, rowset: RowSet, encoded: Encoded | None = None) -> DatasetReport:
        counts = Counter(rowset.labels)
        ordered = sorted(counts.items(), key=lambda kv: (kv[1], kv[0]))
        return cls(
            file=rowset.file,
            rows_read=len(rowset.rows),
            bad_rows=dict(sorted(Counter(b.kind for b in rowset.bad_rows).items())),
            num_classes=len(counts),
            min_class=ordered[0] if ordered else None,
            max_class=ordered[-1] if ordered else None,
            unseen_labels=dict(encoded.unseen) if encoded else {},
        )

    def lines(self) -> list[str]:
        bad = sum(self.bad_rows.values())
        out = [f"{self.file}: {self.rows_read} rows read, {bad} bad rows left out"]
        if bad:
            out.append("  bad rows: " + ", ".join(f"{k} {n}" for k, n in self.bad_rows.items()))
        if self.num_classes and self.min_class and self.max_class:
            out.append(
                f"  {self.num_classes} classes; smallest {self.min_class[0]} ({self.min_class[1]}), "
                f"largest {self.max_class[0]} ({self.max_class[1]})"
            )
        if self.unseen_labels:
            n = sum(self.unseen_labels.values())
            out.append(f"  {n} rows with labels unseen in training: " + ", ".join(sorted(self.unseen_labels)))
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())
