"""Causal-LM SFT and seq2seq: prompt/response data, loss on the response only, perplexity.

Causal LM: the prompt is wrapped in the tokenizer's chat template when it has one (as the model was
instruction-tuned on), and its tokens get label -100 so only the response is learned. Seq2seq
(summarization): the prompt is the encoder input and the response the decoder target.
Generation for predictions.csv uses left padding and never passes token_type_ids to decoder-only
models (seed 003's inference failure).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from loralab.evaluate.generation import generation_metrics
from loralab.evaluate.guards import check_metrics
from loralab.train.batching import Examples, PadCollator

MAX_NEW_TOKENS = 48
GENERATE_BATCH = 8


@dataclass
class Seq2SeqCollator(PadCollator):
    """PadCollator plus decoder_input_ids (labels shifted right behind the decoder start token).

    The trainer pops `labels` before the forward pass, and an encoder-decoder given neither labels
    nor decoder_input_ids builds its decoder inputs from input_ids: it would learn to copy the
    article instead of writing the title.
    """

    decoder_start_token_id: int = 0

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().__call__(items)
        labels = batch["labels"]
        dec = torch.full_like(labels, self.pad_token_id)
        dec[:, 1:] = labels[:, :-1].masked_fill(labels[:, :-1] == -100, self.pad_token_id)
        dec[:, 0] = self.decoder_start_token_id
        batch["decoder_input_ids"] = dec
        return batch


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


def lm_collator(model: Any, pad_token_id: int) -> PadCollator:
    # Training pads on the right: with an attention mask the loss is the same either way, and the
    # prompt/response split in `labels` stays at the start of each row.
    if getattr(model.config, "is_encoder_decoder", False):
        start = model.config.decoder_start_token_id
        if start is None:
            start = pad_token_id
        return Seq2SeqCollator(pad_token_id, padding_side="right", decoder_start_token_id=int(start))
    return PadCollator(pad_token_id, padding_side="right")


def lm_loss(model: Any, ex: Examples, collator: PadCollator, batch_size: int = 16) -> float:
    """Mean token cross-entropy over the response tokens of `ex` (perplexity = exp of it)."""
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


def prompt_of(ex: Examples, i: int, enc_dec: bool) -> list[int]:
    """The model input of row i: the encoder input (seq2seq) or the tokens before the response."""
    if enc_dec:
        return list(ex.input_ids[i])
    return [t for t, lab in zip(ex.input_ids[i], ex.labels[i], strict=True) if lab == -100]


def generate(model: Any, tok: Any, ex: Examples, n: int, batch_size: int = GENERATE_BATCH) -> list[str]:
    """Greedy continuations of the first n rows, decoded.

    Batches are padded on the left: a decoder-only model continues from the last position, and
    right padding would put pad tokens between the prompt and the continuation (seed 003). Only
    input_ids and attention_mask are passed: a decoder-only forward rejects token_type_ids.
    """
    was = model.training
    model.eval()
    device = next(p.device for p in model.parameters())
    enc_dec = getattr(model.config, "is_encoder_decoder", False)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    left = PadCollator(pad, padding_side="left")
    out: list[str] = []
    with torch.no_grad():
        for s in range(0, n, batch_size):
            prompts = [prompt_of(ex, i, enc_dec) for i in range(s, min(s + batch_size, n))]
            batch = left([{"input_ids": p, "labels": 0} for p in prompts])
            ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
            gen = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=MAX_NEW_TOKENS,
                do_sample=False,
                pad_token_id=pad,
            )
            new = gen if enc_dec else gen[:, ids.size(1) :]
            out.extend(tok.decode(row, skip_special_tokens=True) for row in new)
    if was:
        model.train()
    return out


# ---- scoring: the one path of `train` (end of run) and `evaluate RUN_DIR` ----------------------
def generation_scores(model: Any, tok: Any, ex: Any, n: int) -> tuple[list[str], list[str], dict[str, Any]]:
    """Greedy generations for the first n rows, their references, and generation_metrics on them."""
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
