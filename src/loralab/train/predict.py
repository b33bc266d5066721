"""Batched prediction that keeps every output aligned with the input it came from.

Batches are formed from inputs sorted by length (little padding), and each result is written back
at its input's original index, so `predictions[i]` always belongs to `examples[i]`.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from loralab.train.batching import Examples, PadCollator


@dataclass
class ClassPredictions:
    pred: list[int]
    prob: list[float]  # probability of the predicted class
    topk: list[list[tuple[int, float]]]
    loss: float  # mean cross-entropy (unweighted) over the examples


@torch.no_grad()
def predict_classes(
    model: Any,
    ex: Examples,
    collator: PadCollator,
    batch_size: int = 64,
    k: int = 3,
    progress: Callable[[int], None] | None = None,
) -> ClassPredictions:
    was_training = model.training
    model.eval()
    device = next(p.device for p in model.parameters())
    n = len(ex)
    order = sorted(range(n), key=lambda i: len(ex.input_ids[i]))
    pred = [0] * n
    prob = [0.0] * n
    topk: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    total_loss = 0.0
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        items = [
            {
                "input_ids": ex.input_ids[i],
                "labels": ex.labels[i],
                **({"token_type_ids": ex.token_type_ids[i]} if ex.token_type_ids is not None else {}),
            }
            for i in idx
        ]
        batch = {k2: v.to(device) for k2, v in collator(items).items()}
        labels = batch.pop("labels")
        logits = model(**batch).logits.float()
        total_loss += float(F.cross_entropy(logits, labels, reduction="sum"))
        probs = logits.softmax(-1)
        top_p, top_i = probs.topk(min(k, probs.size(-1)), dim=-1)
        for row, i in enumerate(idx):
            pred[i] = int(top_i[row, 0])
            prob[i] = float(top_p[row, 0])
            topk[i] = [(int(c), float(p)) for c, p in zip(top_i[row], top_p[row], strict=True)]
        if progress is not None:
            progress(len(idx))
    if was_training:
        model.train()
    return ClassPredictions(pred=pred, prob=prob, topk=topk, loss=total_loss / max(n, 1))


def write_predictions_csv(
    path: Path, ex: Examples, preds: ClassPredictions, id2label: dict[int, str]
) -> None:
    """predictions.csv: id, text (the rendered input), gold, pred, prob, topk (label:prob;...)."""
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text", "gold", "pred", "prob", "topk"])
        for i in range(len(ex)):
            topk = ";".join(f"{id2label[c]}:{p:.4f}" for c, p in preds.topk[i])
            w.writerow(
                [
                    ex.row_ids[i] if ex.row_ids else str(i),
                    ex.texts[i] if ex.texts else "",
                    id2label[int(ex.labels[i])],
                    id2label[preds.pred[i]],
                    f"{preds.prob[i]:.6f}",
                    topk,
                ]
            )
    tmp.replace(path)
