"""Deterministic stratified splitting and sub-sampling (`extract_ratio`).

Both work per class: a class's items are shuffled with `random.Random(seed)` (classes visited in
sorted order, so the result depends only on the items, labels and seed) and the chosen items come
back in their original order.

`stratified_split`: a class with n items puts round(n * test_size) of them in the test part, but
always keeps at least one in train; a class with a single item therefore goes wholly to train (it
could not be learned otherwise, and a test sample of an untrained class measures nothing).
`extract`: keeps round(n * ratio) items of each class, and at least one, so no class disappears.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence
from typing import TypeVar

from loralab.data.errors import DataError

T = TypeVar("T")


def _round(x: float) -> int:
    return math.floor(x + 0.5)


def _by_class(labels: Sequence[str]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        groups[label].append(i)
    return groups


def _check(items: Sequence[object], labels: Sequence[str]) -> None:
    if len(items) != len(labels):
        raise DataError(f"{len(items)} items but {len(labels)} labels")


def stratified_split(
    items: Sequence[T], labels: Sequence[str], test_size: float, seed: int
) -> tuple[list[T], list[T]]:
    """(train, test), each in the original order; see the module docstring for the per-class rule."""
    _check(items, labels)
    if not 0 < test_size < 1:
        raise DataError(f"test_size must be in (0, 1), got {test_size}")
    rng = random.Random(seed)
    test: set[int] = set()
    for _, idx in sorted(_by_class(labels).items()):
        shuffled = list(idx)
        rng.shuffle(shuffled)
        n_test = min(len(idx) - 1, _round(len(idx) * test_size))
        test.update(shuffled[:n_test])
    train_items = [items[i] for i in range(len(items)) if i not in test]
    test_items = [items[i] for i in sorted(test)]
    return train_items, test_items


def extract(items: Sequence[T], labels: Sequence[str], ratio: float, seed: int) -> list[T]:
    """A stratified sample of about `ratio` of the items, at least one per class, in original order."""
    _check(items, labels)
    if not 0 < ratio <= 1:
        raise DataError(f"extract_ratio must be in (0, 1], got {ratio}")
    if ratio == 1:
        return list(items)
    rng = random.Random(seed)
    keep: list[int] = []
    for _, idx in sorted(_by_class(labels).items()):
        shuffled = list(idx)
        rng.shuffle(shuffled)
        keep.extend(shuffled[: max(1, _round(len(idx) * ratio))])
    return [items[i] for i in sorted(keep)]
