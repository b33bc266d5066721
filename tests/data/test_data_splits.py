"""Stratified split and extract_ratio sampling: proportions, every class kept, deterministic."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from loralab.data import DataError, extract, read_rows, stratified_split

# The copy loralab ships for its demo (identical to ../shared/data/banking77), so this never skips.
BANKING77 = Path(__file__).parents[2] / "src" / "loralab" / "demo" / "banking77"


@pytest.fixture(scope="module")
def banking77() -> tuple[list[int], list[str]]:
    if not (BANKING77 / "train.csv").is_file():
        pytest.skip(f"banking77 data not found at {BANKING77}")
    labels = read_rows(BANKING77 / "train.csv", text_field="text", label_field="category").labels
    return list(range(len(labels))), labels


def test_split_preserves_proportions_on_banking77(banking77: tuple[list[int], list[str]]) -> None:
    items, labels = banking77
    train, test = stratified_split(items, labels, test_size=0.2, seed=7)
    assert sorted(train + test) == items and not set(train) & set(test)
    totals = Counter(labels)
    test_counts = Counter(labels[i] for i in test)
    assert set(test_counts) == set(totals)
    for label, n in totals.items():
        assert abs(test_counts[label] - 0.2 * n) <= 1, label
    assert stratified_split(items, labels, test_size=0.2, seed=7) == (train, test)
    assert stratified_split(items, labels, test_size=0.2, seed=8) != (train, test)


def test_singleton_class_goes_to_train() -> None:
    items = ["a1", "a2", "a3", "a4", "b1"]
    train, test = stratified_split(items, ["a", "a", "a", "a", "b"], test_size=0.5, seed=0)
    assert "b1" in train and len(test) == 2 and all(t.startswith("a") for t in test)
    with pytest.raises(DataError, match="test_size"):
        stratified_split(items, ["a"] * 5, test_size=1.0, seed=0)


def test_extract_keeps_every_class(banking77: tuple[list[int], list[str]]) -> None:
    items, labels = banking77
    sample = extract(items, labels, ratio=0.05, seed=3)
    counts = Counter(labels[i] for i in sample)
    assert len(counts) == 77 and min(counts.values()) >= 1
    assert abs(len(sample) - 0.05 * len(items)) <= 77
    assert sample == sorted(sample) and extract(items, labels, ratio=0.05, seed=3) == sample
    assert extract(items, labels, ratio=1.0, seed=3) == items


def test_extract_tiny_classes() -> None:
    kept = extract(list("abcdefghij"), ["x"] * 9 + ["y"], ratio=0.01, seed=1)
    assert len(kept) == 2 and "j" in kept
    with pytest.raises(DataError, match="extract_ratio"):
        extract([1], ["x"], ratio=0.0, seed=1)
