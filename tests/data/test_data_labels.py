"""Label maps, unseen labels, class weights and the dataset report."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from loralab.config.models import ClassWeights
from loralab.data import (
    DataError,
    DatasetReport,
    build_label_map,
    class_weights,
    class_weights_for,
    encode_rows,
    load_label_map,
    read_rows,
    save_class_weights,
    save_label_map,
)

# The copy loralab ships for its demo (identical to ../shared/data/banking77), so this never skips.
BANKING77 = Path(__file__).parents[2] / "src" / "loralab" / "demo" / "banking77"
needs_banking77 = pytest.mark.skipif(
    not (BANKING77 / "train.csv").is_file(), reason=f"banking77 data not found at {BANKING77}"
)


def test_label_map_sorted_and_round_trip(tmp_path: Path) -> None:
    label_map = build_label_map(["복리후생비", "b", "a", "b"])
    assert label_map.labels == ("a", "b", "복리후생비")
    assert label_map.label2id == {"a": 0, "b": 1, "복리후생비": 2}
    save_label_map(label_map, tmp_path / "labels.json")
    assert "복리후생비" in (tmp_path / "labels.json").read_text(encoding="utf-8")
    assert json.loads((tmp_path / "labels.json").read_text(encoding="utf-8"))["id2label"]["2"] == "복리후생비"
    loaded = load_label_map(tmp_path / "labels.json")
    assert loaded == label_map and loaded.id2label == {0: "a", 1: "b", 2: "복리후생비"}


def test_load_label_map_rejects_inconsistent(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"label2id": {"a": 1}, "id2label": {"0": "a"}}), encoding="utf-8")
    with pytest.raises(DataError, match="disagree"):
        load_label_map(path)


def test_unseen_labels_reported_not_crashed(tmp_path: Path) -> None:
    train = tmp_path / "train.csv"
    train.write_text("text,label\nx,a\ny,b\n", encoding="utf-8")
    test = tmp_path / "test.csv"
    test.write_text("text,label\np,a\nq,zz\nr,zz\ns,new\n", encoding="utf-8")
    label_map = build_label_map(read_rows(train, text_field="text", label_field="label").labels)
    test_rows = read_rows(test, text_field="text", label_field="label")
    encoded = encode_rows(test_rows.rows, label_map)
    assert encoded.label_ids == [0] and [r.text for r in encoded.rows] == ["p"]
    assert encoded.unseen == {"new": 1, "zz": 2} and encoded.unseen_lines == [3, 4, 5]
    assert encoded.unseen_summary() == "3 rows with labels not in training, left out: new (1), zz (2)"
    report = DatasetReport.from_rowset(test_rows, encoded)
    assert report.unseen_labels == {"new": 1, "zz": 2}
    assert "3 rows with labels unseen in training: new, zz" in str(report)


def test_class_weights_by_hand(tmp_path: Path) -> None:
    label_map = build_label_map(["a", "b"])
    # alpha 0.5: raw (1/100)**0.5 = 0.1 and (1/25)**0.5 = 0.2; mean 0.15 -> 0.1/0.15, 0.2/0.15
    weights = class_weights({"a": 100, "b": 25}, label_map, alpha=0.5)
    assert weights == pytest.approx([0.1 / 0.15, 0.2 / 0.15]) and weights == pytest.approx(
        [0.6667, 1.3333], abs=1e-4
    )
    # alpha 0.4 (seed 000): raw 100**-0.4 = 0.158489, 25**-0.4 = 0.275946; mean 0.217218
    weights = class_weights({"a": 100, "b": 25}, label_map, alpha=0.4)
    assert weights == pytest.approx([0.158489 / 0.217218, 0.275946 / 0.217218], rel=1e-5)
    assert class_weights({"a": 100, "b": 25}, label_map, alpha=0.0) == [1.0, 1.0]
    save_class_weights(weights, label_map, tmp_path / "w.json", alpha=0.4)
    saved = json.loads((tmp_path / "w.json").read_text(encoding="utf-8"))
    assert saved["alpha"] == 0.4 and saved["by_label"]["b"] == pytest.approx(weights[1])
    with pytest.raises(DataError, match="none for: b"):
        class_weights({"a": 3}, label_map, alpha=0.4)


def test_class_weights_off() -> None:
    label_map = build_label_map(["a"])
    assert class_weights_for(None, ["a"], label_map) is None
    assert class_weights_for(ClassWeights(enable=False, alpha=0.4), ["a"], label_map) is None
    assert class_weights_for(ClassWeights(enable=True, alpha=0.4), ["a", "a"], label_map) == [1.0]


@needs_banking77
def test_banking77_weights_match_numpy_and_report() -> None:
    rs = read_rows(BANKING77 / "train.csv", text_field="text", label_field="category")
    assert len(rs.rows) == 10003 and rs.bad_rows == []
    label_map = build_label_map(rs.labels)
    assert len(label_map) == 77
    weights = class_weights_for(ClassWeights(enable=True, alpha=0.4), rs.labels, label_map)
    counts = Counter(rs.labels)
    n = np.array([counts[label] for label in label_map.labels], dtype=np.float64)
    expected = n**-0.4 / np.mean(n**-0.4)
    assert weights is not None
    np.testing.assert_allclose(weights, expected, rtol=1e-12)
    assert np.mean(weights) == pytest.approx(1.0)
    report = DatasetReport.from_rowset(rs)
    assert report.min_class == ("contactless_not_working", 35)
    assert report.max_class == ("card_payment_fee_charged", 187)
    assert str(report).splitlines()[1].startswith("  77 classes; smallest contactless_not_working (35)")
