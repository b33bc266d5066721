"""Leakage between training and evaluation data: the same file on both sides, or the same texts.

A test file that is the training file (a copy, a link, or the same path) scores memorisation, not
generalisation; texts shared between the two inflate the scores the same way, row by row. Neither is
an error (a smoke test may do it on purpose), so these only find it for a note.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from loralab.data.readers import Row

_CHUNK = 1 << 20


def file_digest(path: str | Path) -> str:
    """SHA-256 of the file's bytes."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths hold the same bytes: one file under two names, a link, or a copy."""
    pa, pb = Path(a), Path(b)
    if pa.resolve() == pb.resolve():
        return True
    if pa.stat().st_size != pb.stat().st_size:
        return False
    return file_digest(pa) == file_digest(pb)


def shared_texts(train: Sequence[Row], other: Sequence[Row]) -> list[int]:
    """Lines of `other` whose text (stripped) also occurs among the training rows' texts."""
    seen = {r.text.strip() for r in train if r.text is not None}
    return [r.line for r in other if r.text is not None and r.text.strip() in seen]


def leakage_note(
    train_file: str | Path, train: Sequence[Row], other_file: str | Path, other: Sequence[Row]
) -> str | None:
    """One line when `other_file` is the training file or shares texts with it; None otherwise."""
    if same_file(train_file, other_file):
        return (
            f"{other_file} holds the same bytes as the training file {train_file}: its scores measure "
            "memorisation, not generalisation"
        )
    lines = shared_texts(train, other)
    if not lines:
        return None
    shown = ", ".join(map(str, lines[:5])) + (f" and {len(lines) - 5} more" if len(lines) > 5 else "")
    return (
        f"{other_file}: {len(lines)} of {len(other)} rows have a text that also occurs in training "
        f"(lines {shown}); their scores are inflated"
    )
