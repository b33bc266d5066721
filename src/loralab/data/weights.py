"""Inverse-frequency class weights for seq-cls losses.

w_c = (1 / n_c) ** alpha, then scaled so that the mean weight over classes is 1. alpha = 0 gives
uniform weights, alpha = 1 plain inverse frequency; seed 000 used alpha = 0.4 on 260 classes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from loralab.config.models import ClassWeights
from loralab.data.errors import DataError
from loralab.data.labels import LabelMap
from loralab.io import write_json


def class_weights(counts: dict[str, int], label_map: LabelMap, alpha: float) -> list[float]:
    """Weights aligned with label ids; every class of the map must have at least one sample."""
    if alpha < 0:
        raise DataError(f"class_weights.alpha must be >= 0, got {alpha}")
    empty = [label for label in label_map.labels if counts.get(label, 0) <= 0]
    if empty:
        raise DataError(f"class weights need >= 1 sample per class; none for: {', '.join(empty[:10])}")
    raw = [(1.0 / counts[label]) ** alpha for label in label_map.labels]
    mean = sum(raw) / len(raw)
    return [w / mean for w in raw]


def class_weights_for(
    config: ClassWeights | None, labels: Iterable[str], label_map: LabelMap
) -> list[float] | None:
    """None when class weights are off (no config, or `enable: false`); else `class_weights`."""
    if config is None or not config.enable:
        return None
    return class_weights(dict(Counter(labels)), label_map, config.alpha)


def save_class_weights(weights: list[float], label_map: LabelMap, path: str | Path, alpha: float) -> None:
    """Write `{"alpha", "weights" (by id), "by_label"}` as UTF-8 JSON."""
    if len(weights) != len(label_map):
        raise DataError(f"{len(weights)} weights for {len(label_map)} labels")
    data = {"alpha": alpha, "weights": weights, "by_label": dict(zip(label_map.labels, weights, strict=True))}
    write_json(Path(path), data)
