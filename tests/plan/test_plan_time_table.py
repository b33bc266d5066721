"""`loralab plan`'s time table reads as words with units, and says how to give an unknown token count."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from rich.console import Console

from loralab.plan.estimate.render_memory import UNKNOWN_TOKENS, time_table
from loralab.plan.estimate.timing import TimeEstimate, estimate_time

RAW_KEYS = ("flops_per_token", "tokens_per_epoch", "flops_per_step", "tflops_per_gpu", "tokens_from")


def _rows(tm: TimeEstimate) -> dict[str, str]:
    """The rendered table as {label: value}, read back from the text a terminal shows."""
    console = Console(record=True, width=200, color_system=None)
    console.print(time_table(tm))
    rows = {}
    for line in console.export_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("│┃").split("│")]
        if len(cells) == 2 and cells[0]:
            rows[cells[0]] = cells[1]
    text = console.export_text()
    for key in RAW_KEYS:
        assert key not in text, key
    return rows


def _setup(*, checkpointing: bool = False) -> SimpleNamespace:
    return SimpleNamespace(micro_batch=4, seq_len=512, gpus=2, gradient_checkpointing=checkpointing)


def test_known_token_count_shows_every_quantity_with_its_unit() -> None:
    # 2,048 tokens a step; 2 + 4 GFLOP per token forward + backward: 6 GFLOP per token
    act = SimpleNamespace(
        flops_forward=2048 * 2_000_000_000, flops_backward=2048 * 4_000_000_000, flops_recompute=0
    )
    tm = estimate_time(
        act, _setup(), tokens_per_epoch=1_000_000, tokens_source="--tokens (per epoch)", epochs=3, tflops=100
    )
    # by hand: 6e9 FLOP x 3e6 tokens / (2 GPUs x 100e12 FLOP/s) = 90 s = 1.5 min = 0.025 h
    assert tm.flops_per_token == 6e9 and tm.tokens == 3_000_000
    assert tm.hours == pytest.approx(0.025)
    rows = _rows(tm)
    assert rows["FLOPs per token (forward + backward)"] == "6 GFLOP"
    assert rows["forward, per micro-batch step"] == "4.096 TFLOP"
    assert rows["backward, per micro-batch step"] == "8.192 TFLOP"
    assert rows["tokens per epoch"] == "1,000,000 tokens"
    assert rows["counted from"] == "--tokens (per epoch)"
    assert rows["epochs"] == "3"
    assert rows["tokens in all (epochs x tokens per epoch)"] == "3,000,000 tokens"
    assert rows["GPUs"] == "2"
    assert rows["sustained rate"] == "100 TFLOP/s per GPU x 2 GPUs"
    assert rows["rate from"] == "--tflops 100"
    assert rows["hours (matmul FLOPs at the sustained rate)"] == "1.5 min (0.025 h)"
    assert UNKNOWN_TOKENS not in rows.values()
    # the JSON keys are unchanged and carry the same numbers
    data = tm.to_json()
    assert data["tokens_per_epoch"] == 1_000_000 and data["tokens"] == 3_000_000 and data["epochs"] == 3
    assert data["flops_per_token"] == 6e9 and data["hours"] == pytest.approx(0.025)


@pytest.mark.parametrize("tokens", [0, None])
def test_unknown_token_count_says_how_to_give_it_in_every_row_that_needs_it(tokens: int | None) -> None:
    act = SimpleNamespace(flops_forward=2048 * 2_000_000_000, flops_backward=2048 * 4_000_000_000,
                          flops_recompute=2048 * 1_000_000_000)  # fmt: skip
    tm = estimate_time(
        act,
        _setup(checkpointing=True),
        tokens_per_epoch=tokens,
        tokens_source="unknown: no data.train_file (pass --tokens)",
        epochs=20,
    )
    assert tm.tokens is None and tm.hours is None
    rows = _rows(tm)
    for label in ("tokens per epoch", "tokens in all (epochs x tokens per epoch)",
                  "hours (matmul FLOPs at the sustained rate)"):  # fmt: skip
        assert rows[label] == UNKNOWN_TOKENS == "unknown (pass --tokens or data.train_file)", label
    assert rows["why unknown"] == "no data.train_file (pass --tokens)"
    # what does not depend on the token count is still shown
    assert rows["FLOPs per token (forward + backward + recomputed forward)"] == "7 GFLOP"
    assert rows["recomputed forward (checkpointing), per step"] == "2.048 TFLOP"
    assert rows["epochs"] == "20"
    assert rows["sustained rate"] == "109.2 TFLOP/s per GPU x 2 GPUs"  # A100-80GB 312 x 35% MFU
    assert "0 tokens" not in rows.values()
    data = tm.to_json()
    assert data["tokens_per_epoch"] is None and data["tokens"] is None and data["hours"] is None
    assert set(data) == {
        "flops_per_token", "flops_per_step_forward", "flops_per_step_backward", "flops_per_step_recompute",
        "tokens_per_epoch", "epochs", "tokens", "gpus", "tflops_per_gpu", "rate", "tokens_from", "hours",
    }  # fmt: skip


def test_long_runs_show_hours_and_days() -> None:
    tm = TimeEstimate(
        flops_per_token=6e10, flops_forward=0, flops_backward=0, flops_recompute=0,
        tokens_per_epoch=100_000_000, epochs=2, gpus=1, tflops_per_gpu=100.0,
        rate_source="--tflops 100", tokens_source="--tokens (per epoch)",
    )  # fmt: skip
    # 6e10 x 2e8 / 1e14 = 120,000 s = 33.33 h
    assert _rows(tm)["hours (matmul FLOPs at the sustained rate)"] == "33.3 h"
    tm.epochs = 6  # 100 h
    assert _rows(tm)["hours (matmul FLOPs at the sustained rate)"] == "100 h = 4.2 days"
