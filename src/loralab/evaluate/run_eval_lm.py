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


def evaluate_lm_run(run_dir: Path, cfg: Any, *, data: Path | None, split: str) -> tuple[dict[str, Any], Path]:
    from loralab.data import read_rows
    from loralab.evaluate.run_eval import _load_run_model, _split_file
    from loralab.train.lm import _collator, lm_examples, lm_loss
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
    loss = lm_loss(model, ex, _collator(model, tok.pad_token_id))
    n = min(len(ex), MAX_GENERATE)
    preds, refs, gen = generation_scores(model, tok, ex, n)
    metrics = {
        "split": split if data is None else path.name,
        "loss": loss,
        "perplexity": math.exp(min(loss, 50.0)),
    }
    metrics |= {"n": len(ex), "generated": n, **gen}
    out = run_dir / f"eval-{split if data is None else path.stem}"
    out.mkdir(exist_ok=True)
    with (out / "predictions.csv").open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text", "gold", "pred"])
        for i in range(n):
            w.writerow([ex.row_ids[i], ex.texts[i], refs[i], preds[i]])
    write_json(out / "metrics.json", metrics)
    return metrics, out
