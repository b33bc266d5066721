"""Causal-LM SFT and seq2seq: prompt/response data, loss on the response only, perplexity.

Causal LM: the prompt is wrapped in the tokenizer's chat template when it has one (as the model was
instruction-tuned on), and its tokens get label -100 so only the response is learned. Seq2seq
(summarization): the prompt is the encoder input and the response the decoder target.
Generation for predictions.csv uses left padding and never passes token_type_ids to decoder-only
models (seed 003's inference failure).
"""

from __future__ import annotations

from dataclasses import dataclass
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
        import torch

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
    torch.manual_seed(int(cfg.training_args.get("seed", 42)))
    session.policy = choose_precision(cfg)
    session.tokenizer = tok = load_tokenizer(cfg)
    _read_splits(session, tok)
    session.class_weights = None
    model = load_model(cfg, session.policy, run_dir=session.run_dir, tokenizer=tok)
    session.model = apply_lora(model, cfg)
    _, session.plan = lora_kwargs(cfg)
    session.collator = _collator(model, tok.pad_token_id)
    session._build_trainer()
    session.trainer.evaluate_fn = lambda m: {
        "loss": lm_loss(m, session.splits["validation"], session.collator)
    }


def _read_splits(session: Session, tok: Any) -> None:
    """Tokenised train/validation/test splits in session.splits, and data_report.json."""
    cfg, d = session.cfg, session.cfg.data
    prompt_field, response_field = _fields(session)
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
    rows, val = train.rows, read(d.validation_file)
    val_rows, val_file = (val.rows, val.file) if val is not None else (None, train.file)
    if val_rows is None:
        n_val = max(1, len(rows) // 10)
        rows, val_rows = rows[n_val:], rows[:n_val]
        session.notes.append(f"validation: the first {n_val} training rows")
    test = read(d.test_file)
    max_len = int(d.max_length or 256)
    report: dict[str, Any] = {}
    for name, split, file in (
        ("train", rows, train.file),
        ("validation", val_rows, val_file),
        ("test", test.rows if test else None, test.file if test else ""),
    ):
        if not split:
            continue
        texts, targets = [r.text or "" for r in split], [r.label or "" for r in split]
        ex = lm_examples(tok, cfg.model.task, texts, targets, max_len)
        ex.row_ids = [f"{Path(file).name}:{r.line}" for r in split]
        session.splits[name] = ex
        report[name] = {"rows": len(ex), "truncated": ex.truncated}
    write_json(session.run_dir / "data_report.json", report)


def _collator(model: Any, pad_token_id: int) -> PadCollator:
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
    """Loss and perplexity on every row of the split; generations (and ROUGE/BLEU/chrF on them) for
    the first MAX_GENERATE rows, through the same code as `loralab evaluate`."""
    from loralab.evaluate.run_eval_lm import score_lm, write_generations_csv

    split = "test" if "test" in session.splits else "validation"
    ex = session.splits[split]
    metrics, preds, refs = score_lm(
        session.model, session.tokenizer, ex, session.collator, split=split, max_generate=MAX_GENERATE
    )
    write_generations_csv(session.run_dir / "predictions.csv", ex, refs, preds)
    write_json(session.run_dir / "metrics.json", metrics)
    session.metrics = metrics
    return metrics


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
    import torch

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
