"""`loralab evaluate RUN_DIR` for causal-LM and seq2seq runs: loss, perplexity, generations, ROUGE."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from loralab.errors import LoralabError

MAX_GENERATE = 200  # generation is the slow part on a CPU; the loss covers every row


def generation_scores(model: Any, tok: Any, ex: Any, n: int) -> tuple[list[str], list[str], dict[str, Any]]:
    """Greedy generations for the first n rows, their references, and generation_metrics on them."""
    from loralab.evaluate.generation import generation_metrics
    from loralab.evaluate.guards import check_metrics
    from loralab.train.lm import generate

    preds = generate(model, tok, ex, n)
    refs = [tok.decode([t for t in ex.labels[i] if t != -100], skip_special_tokens=True) for i in range(n)]
    m = generation_metrics(preds, refs)
    m["warnings"] = check_metrics(m, task="generation", predictions=preds, references=refs)
    return preds, refs, m


def score_lm(
    model: Any, tok: Any, ex: Any, collator: Any, *, split: str, max_generate: int
) -> tuple[dict[str, Any], list[str], list[str]]:
    """Loss and perplexity over every row, generations and their scores for the first rows:
    the one scoring path of `train` (end of run) and `evaluate RUN_DIR`."""
    from loralab.train.lm import lm_loss

    loss = lm_loss(model, ex, collator)
    n = min(len(ex), max_generate)
    preds, refs, gen = generation_scores(model, tok, ex, n)
    metrics = {"split": split, "loss": loss, "perplexity": math.exp(min(loss, 50.0))}
    metrics |= {"n": len(ex), "generated": n, **gen}
    return metrics, preds, refs


def write_generations_csv(path: Path, ex: Any, refs: list[str], preds: list[str]) -> None:
    """predictions.csv for generation: id, text (the prompt), gold (reference), pred."""
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text", "gold", "pred"])
        for i in range(len(preds)):
            w.writerow([ex.row_ids[i] if ex.row_ids else i, ex.texts[i], refs[i], preds[i]])


def evaluate_lm_run(run_dir: Path, cfg: Any, *, data: Path | None, split: str) -> tuple[dict[str, Any], Path]:
    from loralab.data import read_rows
    from loralab.evaluate.run_eval import _load_run_model, _split_file
    from loralab.train.lm import _collator, lm_examples
    from loralab.train.run import quiet_libraries, write_json

    quiet_libraries()
    path = _split_file(cfg, data, split)
    d = cfg.data
    prompt_field = d.prompt_field or d.text_field
    response_field = d.response_field or d.label_field
    rows = read_rows(
        path,
        text_field=prompt_field,
        text_template=None if prompt_field else d.text_template,
        label_field=response_field,
    ).rows
    if not rows:
        raise LoralabError(f"{path}: no usable rows to evaluate")
    model, tok = _load_run_model(run_dir, cfg)
    ex = lm_examples(
        tok,
        cfg.model.task,
        [r.text or "" for r in rows],
        [r.label or "" for r in rows],
        int(d.max_length or 256),
    )
    ex.row_ids = [f"{path.name}:{r.line}" for r in rows]
    metrics, preds, refs = score_lm(
        model,
        tok,
        ex,
        _collator(model, tok.pad_token_id),
        split=split if data is None else path.name,
        max_generate=MAX_GENERATE,
    )
    out = run_dir / f"eval-{split if data is None else path.stem}"
    out.mkdir(exist_ok=True)
    write_generations_csv(out / "predictions.csv", ex, refs, preds)
    write_json(out / "metrics.json", metrics)
    return metrics, out
