"""Causal-LM SFT and seq2seq: prompt/response data, loss on the response only, perplexity.

Causal LM: the prompt is wrapped in the tokenizer's chat template when it has one (as the model was
instruction-tuned on), and its tokens get label -100 so only the response is learned. Seq2seq
(summarization): the prompt is the encoder input and the response the decoder target.
Generation for predictions.csv uses left padding and never passes token_type_ids to decoder-only
models (seed 003's inference failure).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loralab.data import read_rows
from loralab.errors import ConfigError, Problem
from loralab.train.batching import Examples, PadCollator
from loralab.train.run import write_json

if TYPE_CHECKING:
    from loralab.train.session import Session

MAX_GENERATE = 64  # rows of the evaluation split that get a generated prediction in predictions.csv
MAX_NEW_TOKENS = 48


def _prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
        )
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)
    return list(tokenizer(prompt, add_special_tokens=True)["input_ids"])


def lm_examples(
    tokenizer: Any, task: str, prompts: list[str], responses: list[str], max_length: int
) -> Examples:
    ids: list[list[int]] = []
    labels: list[list[int]] = []
    truncated = 0
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for p, r in zip(prompts, responses, strict=True):
        if task == "seq2seq":
            x = tokenizer(p, truncation=True, max_length=max_length)["input_ids"]
            y = tokenizer(text_target=r, truncation=True, max_length=max_length)["input_ids"]
            truncated += int(len(tokenizer(p)["input_ids"]) > max_length)
            ids.append(list(x))
            labels.append(list(y))
            continue
        prompt = _prompt_ids(tokenizer, p)
        resp = list(tokenizer(r, add_special_tokens=False)["input_ids"]) + eos
        seq = prompt + resp
        if len(seq) > max_length:
            truncated += 1
            seq = seq[:max_length]
        lab = ([-100] * len(prompt) + resp)[: len(seq)]
        ids.append(seq)
        labels.append(lab)
    return Examples(input_ids=ids, labels=labels, texts=prompts, truncated=truncated)


def _fields(session: Session) -> tuple[str | None, str | None]:
    d = session.cfg.data
    response = d.response_field or d.label_field
    if not response or not (d.prompt_field or d.text_field or d.text_template):
        raise ConfigError(
            [
                Problem(
                    str(session.cfg.source),
                    "data",
                    f"{session.cfg.model.task} needs a prompt and a response",
                    "set data.prompt_field (or text_field/text_template) and data.response_field",
                )
            ]
        )
    return d.prompt_field or d.text_field, response


def setup_lm(session: Session) -> None:
    import torch

    from loralab.train.loading import apply_lora, load_model, load_tokenizer, lora_kwargs
    from loralab.train.precision import choose_precision

    cfg = session.cfg
    seed = int(cfg.training_args.get("seed", 42))
    torch.manual_seed(seed)
    session.policy = choose_precision(cfg)
    session.tokenizer = tok = load_tokenizer(cfg)
    prompt_field, response_field = _fields(session)
    d = cfg.data
    template = None if prompt_field else d.text_template

    def read(path: str | None) -> Any:
        if not path:
            return None
        return read_rows(
            cfg.resolve_path(path),
            text_field=prompt_field,
            text_template=template,
            label_field=response_field,
        )

    train = read(d.train_file)
    if train is None:
        raise ConfigError([Problem(str(cfg.source), "data.train_file", "no training data", "set it")])
    rows = train.rows
    val = read(d.validation_file)
    val_rows = val.rows if val is not None else None
    if val_rows is None:
        n_val = max(1, len(rows) // 10)
        rows, val_rows = rows[n_val:], rows[:n_val]
        session.notes.append(f"validation: the first {n_val} training rows")
    test = read(d.test_file)
    max_len = int(d.max_length or 256)
    for name, split in (("train", rows), ("validation", val_rows), ("test", test.rows if test else None)):
        if split:
            ex = lm_examples(
                tok, cfg.model.task, [r.text or "" for r in split], [r.label or "" for r in split], max_len
            )
            ex.row_ids = [f"{r.line}" for r in split]
            session.splits[name] = ex
    write_json(
        session.run_dir / "data_report.json",
        {k: {"rows": len(v), "truncated": v.truncated} for k, v in session.splits.items()},
    )
    session.class_weights = None
    model = load_model(cfg, session.policy, run_dir=session.run_dir, tokenizer=tok)
    session.model = apply_lora(model, cfg)
    _, session.plan = lora_kwargs(cfg)
    session.collator = PadCollator(tok.pad_token_id, padding_side="right")
    session._build_trainer()
    session.trainer.evaluate_fn = lambda m: {
        "loss": lm_loss(m, session.splits["validation"], session.collator)
    }


def lm_loss(model: Any, ex: Examples, collator: PadCollator, batch_size: int = 16) -> float:
    """Mean token cross-entropy over the response tokens of `ex` (perplexity = exp of it)."""
    import torch
    import torch.nn.functional as F

    was = model.training
    model.eval()
    device = next(p.device for p in model.parameters())
    enc_dec = getattr(model.config, "is_encoder_decoder", False)
    total, count = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(ex), batch_size):
            items = [
                {"input_ids": ex.input_ids[i], "labels": ex.labels[i]}
                for i in range(s, min(s + batch_size, len(ex)))
            ]
            batch = {k: v.to(device) for k, v in collator(items).items()}
            labels = batch.pop("labels")
            if enc_dec:
                batch["labels"] = labels
            logits = model(**batch).logits.float()
            shift = 0 if enc_dec else 1
            lg, lb = logits[:, : logits.size(1) - shift], labels[:, shift:]
            total += float(
                F.cross_entropy(
                    lg.reshape(-1, lg.size(-1)), lb.reshape(-1), ignore_index=-100, reduction="sum"
                )
            )
            count += int((lb != -100).sum())
    if was:
        model.train()
    return total / max(count, 1)


def validate_lm(session: Session) -> dict[str, Any]:
    split = "test" if "test" in session.splits else "validation"
    ex = session.splits[split]
    loss = lm_loss(session.model, ex, session.collator)
    metrics: dict[str, Any] = {
        "split": split,
        "loss": loss,
        "perplexity": math.exp(min(loss, 50.0)),
        "n": len(ex),
    }
    _write_generations(session, ex, session.run_dir / "predictions.csv")
    write_json(session.run_dir / "metrics.json", metrics)
    session.metrics = metrics
    return metrics


def _write_generations(session: Session, ex: Examples, path: Path) -> None:
    import csv

    import torch

    tok = session.tokenizer
    model = session.model
    model.eval()
    enc_dec = getattr(model.config, "is_encoder_decoder", False)
    n = min(len(ex), MAX_GENERATE)
    rows = []
    with torch.no_grad():
        for i in range(n):
            prompt = (
                ex.input_ids[i]
                if enc_dec
                else [t for t, lab in zip(ex.input_ids[i], ex.labels[i], strict=True) if lab == -100]
            )
            inp = torch.tensor([prompt])
            # Only input_ids and attention_mask: a decoder-only forward rejects token_type_ids.
            out = model.generate(
                input_ids=inp,
                attention_mask=torch.ones_like(inp),
                max_new_tokens=MAX_NEW_TOKENS,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
            )
            gen = out[0] if enc_dec else out[0][len(prompt) :]
            gold = [t for t in ex.labels[i] if t != -100]
            rows.append(
                [
                    ex.row_ids[i] if ex.row_ids else i,
                    ex.texts[i],
                    tok.decode(gold, skip_special_tokens=True),
                    tok.decode(gen, skip_special_tokens=True),
                ]
            )
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text", "gold", "pred"])
        w.writerows(rows)
