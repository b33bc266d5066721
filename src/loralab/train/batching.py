"""Tokenised examples, length-bucketed batches and dynamic padding.

Padding every row to `max_length` wastes most of the compute on short texts (Banking77's queries
average ~15 tokens): the issue measured random batches 4x slower than length-grouped ones. Here
batches are cut from the examples sorted by length, so a batch holds texts of (nearly) the same
length and is padded only to its own longest row; the order of batches is shuffled per epoch with a
seeded generator, so an epoch's order is a pure function of (seed, epoch): a resumed run sees the
same batches as an uninterrupted one.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Examples:
    """A tokenised split, unpadded. `labels` are class ids (seq-cls) or token ids lists (LM tasks)."""

    input_ids: list[list[int]]
    labels: list[Any]
    texts: list[str] = field(default_factory=list)
    row_ids: list[str] = field(default_factory=list)  # "<file>:<line>", for predictions.csv
    token_type_ids: list[list[int]] | None = None
    truncated: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)

    def lengths(self) -> list[int]:
        return [len(x) for x in self.input_ids]


class ExampleDataset(torch.utils.data.Dataset[dict[str, Any]]):
    def __init__(self, ex: Examples):
        self.ex = ex

    def __len__(self) -> int:
        return len(self.ex)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {"input_ids": self.ex.input_ids[i], "labels": self.ex.labels[i]}
        if self.ex.token_type_ids is not None:
            item["token_type_ids"] = self.ex.token_type_ids[i]
        return item


class LengthBucketBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of similar length; shuffled within equal lengths and across batches, per epoch."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, *, shuffle: bool = True):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        # Called by accelerate/Trainer at each epoch start (also after a resume).
        self.epoch = int(epoch)

    def batches(self) -> list[list[int]]:
        rng = random.Random(f"{self.seed}:{self.epoch}")
        # Random tie-break inside a length, then a stable sort by length.
        keys = [rng.random() if self.shuffle else i for i in range(len(self.lengths))]
        order = sorted(range(len(self.lengths)), key=lambda i: (self.lengths[i], keys[i]))
        out = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if self.shuffle:
            rng.shuffle(out)
        return out

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size


@dataclass
class PadCollator:
    """Pads a batch to its longest row; attention_mask marks real tokens. Labels: ints or token lists
    (padded with -100, the ignore index of transformers' losses)."""

    pad_token_id: int
    padding_side: str = "right"

    def _pad(self, seqs: list[list[int]], value: int) -> torch.Tensor:
        width = max(len(s) for s in seqs)
        rows = []
        for s in seqs:
            fill = [value] * (width - len(s))
            rows.append(fill + list(s) if self.padding_side == "left" else list(s) + fill)
        return torch.tensor(rows, dtype=torch.long)

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids = [it["input_ids"] for it in items]
        batch = {
            "input_ids": self._pad(ids, self.pad_token_id),
            "attention_mask": self._pad([[1] * len(s) for s in ids], 0),
        }
        if "token_type_ids" in items[0]:
            batch["token_type_ids"] = self._pad([it["token_type_ids"] for it in items], 0)
        labels = [it["labels"] for it in items]
        if isinstance(labels[0], list):
            batch["labels"] = self._pad(labels, -100)
        else:
            batch["labels"] = torch.tensor(labels, dtype=torch.long)
        return batch
