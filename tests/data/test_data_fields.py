"""`recommend --data FILE`: the text/label (prompt/response) columns, rows and label count, read the
way `train` reads them, on the shipped data files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from loralab.data.fields import data_fields, sibling_test_file
from loralab.data.readers import read_rows
from loralab.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
BANKING = ROOT / "src/loralab/demo/banking77"
EXAMPLES = ROOT / "examples/data"


def test_banking77_text_category_77_labels_and_its_test_file() -> None:
    f = data_fields(BANKING / "train.csv", "seq-cls")
    assert f.fields == {"data.text_field": "text", "data.label_field": "category"}
    # an independent count: the label column read with the csv module
    with (BANKING / "train.csv").open(encoding="utf-8", newline="") as fh:
        labels = [r["category"] for r in csv.DictReader(fh)]
    assert f.num_labels == len(set(labels)) == 77
    assert f.rows == len(labels)
    assert f.test_file == BANKING / "test.csv"


def test_tweets_source_column_is_the_label() -> None:
    f = data_fields(EXAMPLES / "healthtweets-train.csv", "seq-cls")
    assert f.fields == {"data.text_field": "text", "data.label_field": "source"}
    assert f.num_labels == 16
    assert f.test_file == EXAMPLES / "healthtweets-test.csv"


def test_korean_chat_prompt_response_for_sft() -> None:
    f = data_fields(EXAMPLES / "korean-chat-train.jsonl", "causal-lm")
    assert f.fields == {"data.prompt_field": "prompt", "data.response_field": "response"}
    assert f.num_labels is None
    assert f.rows == len(read_rows(EXAMPLES / "korean-chat-train.jsonl").rows)
    assert f.test_file == EXAMPLES / "korean-chat-test.jsonl"


def test_two_columns_one_named_the_other_is_its_partner(tmp_path: Path) -> None:
    p = tmp_path / "x.csv"
    p.write_text("text,account\nlunch,meals\ntaxi,travel\n", encoding="utf-8")
    f = data_fields(p, "seq-cls")
    assert f.fields["data.label_field"] == "account"
    assert f.how["data.label_field"] == "the only other column"
    assert f.test_file is None


def test_unclear_columns_refused_with_the_columns_and_the_flags(tmp_path: Path) -> None:
    p = tmp_path / "train.jsonl"
    p.write_text(json.dumps({"a": "x", "b": "y", "c": "z"}) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        data_fields(p, "seq-cls")
    msg = e.value.message()
    assert "a, b, c" in msg and "--text-field" in msg and "--label-field" in msg


def test_given_field_that_is_not_a_column_suggests_the_closest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        data_fields(BANKING / "train.csv", "seq-cls", label_field="categroy")
    assert "category" in e.value.message()


def test_sibling_test_file_only_when_it_exists(tmp_path: Path) -> None:
    (tmp_path / "my-train.csv").write_text("text,label\na,b\n", encoding="utf-8")
    assert sibling_test_file(tmp_path / "my-train.csv") is None
    (tmp_path / "my-test.csv").write_text("text,label\na,b\n", encoding="utf-8")
    assert sibling_test_file(tmp_path / "my-train.csv") == tmp_path / "my-test.csv"
