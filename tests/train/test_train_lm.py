"""Causal-LM SFT and seq2seq (loralab.train.lm) end to end on tiny random models built on the fly.

The loss is checked against transformers' own `labels=` loss on the saved adapter, token-weighted,
so perplexity is exp of an independently computed number; prompt and padding tokens carry -100.
"""

from __future__ import annotations

import csv
import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

from loralab.train.batching import PadCollator
from loralab.train.lm import Seq2SeqCollator, generate, lm_examples
from loralab.train.run import train

COLORS = {"cat": "black", "dog": "brown", "sun": "yellow", "sea": "blue", "leaf": "green", "snow": "white"}
FILLER = ["today", "we", "saw", "near", "house", "very", "big", "small", "and"]
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0-3, as BART numbers bos/pad/eos/unk
# The chat template of the tiny decoder; USER/ASSISTANT are what it renders around a prompt.
CHAT_TEMPLATE = (
    "{% for m in messages %}<s> user : {{ m['content'] }} </s> {% endfor %}"
    "{% if add_generation_prompt %}<s> assistant :{% endif %}"
)


def render_chat(prompt: str) -> str:
    return f"<s> user : {prompt} </s> <s> assistant :"


def qa_rows(n: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    nouns = list(COLORS)
    rows = []
    for i in range(n):
        noun = nouns[i % len(nouns)]
        extra = " ".join(rng.sample(FILLER, rng.randint(0, 3)))
        rows.append(
            {
                "prompt": f"what color is the {noun} {extra}".strip(),
                "response": f"the {noun} is {COLORS[noun]}",
            }
        )
    return rows


def news_rows(n: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    nouns = list(COLORS)
    rows = []
    for i in range(n):
        noun = nouns[i % len(nouns)]
        words = [f"the {noun} is {COLORS[noun]}", *rng.sample(FILLER, rng.randint(2, 6))]
        rows.append({"article": " ".join(words), "title": f"{noun} {COLORS[noun]}"})
    return rows


def word_tokenizer(texts: list[str], **kwargs: Any) -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.train_from_iterator([*texts, "user assistant :"], trainers.WordLevelTrainer(special_tokens=SPECIALS))
    return tk, PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>", **kwargs
    )


def all_texts() -> list[str]:
    return [r["prompt"] + " " + r["response"] for r in qa_rows(12, 0)] + FILLER


def tiny_chat_llama(folder: Path) -> Path:
    """Random 2-layer Llama; its tokenizer has a chat template, token_type_ids and no pad token."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    _, tok = word_tokenizer(all_texts(), model_input_names=["input_ids", "token_type_ids", "attention_mask"])
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(folder)
    cfg = LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=len(tok), bos_token_id=0, eos_token_id=2,
        max_position_embeddings=64, initializer_range=0.2,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    return folder


def tiny_bart(folder: Path) -> Path:
    """Random 2+2-layer BART with a WordLevel tokenizer that wraps every text in <s> ... </s>."""
    import torch
    from tokenizers import processors
    from transformers import BartConfig, BartForConditionalGeneration

    tk, _ = word_tokenizer(all_texts())
    tk.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    tok.save_pretrained(folder)
    cfg = BartConfig(
        vocab_size=len(tok), d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=64,
        bos_token_id=0, pad_token_id=1, eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=2,
        dropout=0.0, attention_dropout=0.0, init_std=0.2,
    )  # fmt: skip
    torch.manual_seed(0)
    BartForConditionalGeneration(cfg).save_pretrained(folder)
    return folder


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def experiment(folder: Path, model: Path, task: str, train_file: Path, test_file: Path, fields: str) -> Path:
    # Every linear layer: random "pretrained" weights leave attention-only LoRA too little to steer.
    targets = (
        "[q_proj, v_proj, gate_proj, up_proj, down_proj]"
        if task == "causal-lm"
        else "[q_proj, v_proj, fc1, fc2]"
    )
    task_type = {"causal-lm": "CAUSAL_LM", "seq2seq": "SEQ_2_SEQ_LM"}[task]
    text = f"""
model: {{name_or_path: {model}, task: {task}}}
lora:
  config: {{task_type: {task_type}, r: 8, lora_alpha: 16, lora_dropout: 0.0,
           target_modules: {targets}}}
data: {{train_file: {train_file}, test_file: {test_file}, {fields}, max_length: 48}}
training_args:
  num_train_epochs: 6
  learning_rate: 2.0e-2
  per_device_train_batch_size: 8
  eval_strategy: epoch
  save_strategy: "no"
  logging_steps: 1
  seed: 3
  use_cpu: true
tracking: {{backend: none}}
"""
    p = folder / f"{task}.yaml"
    p.write_text(text, encoding="utf-8")
    return p


@pytest.fixture(scope="module")
def causal_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("sft")
    model = tiny_chat_llama(root / "model")
    train_f = write_csv(root / "train.csv", qa_rows(72, 1))
    test_rows = qa_rows(12, 2)
    test_f = write_jsonl(root / "test.jsonl", test_rows)
    cfg = experiment(
        root, model, "causal-lm", train_f, test_f, "prompt_field: prompt, response_field: response"
    )
    train(cfg, output=root / "run", quiet=True)
    return {"root": root, "model": model, "run": root / "run", "test": test_rows}


@pytest.fixture(scope="module")
def seq2seq_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("s2s")
    model = tiny_bart(root / "model")
    train_f = write_jsonl(root / "train.jsonl", news_rows(72, 1))
    test_rows = news_rows(12, 2)
    test_f = write_jsonl(root / "test.jsonl", test_rows)
    cfg = experiment(root, model, "seq2seq", train_f, test_f, "prompt_field: article, response_field: title")
    train(cfg, output=root / "run", quiet=True)
    return {"root": root, "model": model, "run": root / "run", "test": test_rows}


# ---- independent reference computations -----------------------------------------------------------


def trained(run: dict[str, Any], task: str) -> tuple[Any, Any, Any]:
    """(base model, base + the run's adapter, tokenizer), loaded with plain transformers/PEFT."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    auto = AutoModelForCausalLM if task == "causal-lm" else AutoModelForSeq2SeqLM
    tok = AutoTokenizer.from_pretrained(run["model"])
    tuned = PeftModel.from_pretrained(auto.from_pretrained(run["model"]), run["run"] / "adapter").eval()
    return auto.from_pretrained(run["model"]).eval(), tuned, tok


def causal_pairs(tok: Any, rows: list[dict[str, str]]) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) built by hand: the chat-rendered prompt masked, response + eos learned."""
    out = []
    for r in rows:
        prompt = tok(render_chat(r["prompt"]), add_special_tokens=False)["input_ids"]
        resp = tok(r["response"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        out.append((prompt + resp, [-100] * len(prompt) + resp))
    return out


def hf_token_loss(model: Any, pairs: list[tuple[list[int], list[int]]], causal: bool) -> float:
    """Token-weighted mean of transformers' own `labels=` loss, one unpadded example at a time."""
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for ids, labels in pairs:
            lab = torch.tensor([labels])
            loss = model(input_ids=torch.tensor([ids]), labels=lab).loss
            n = int((lab[:, 1:] != -100).sum()) if causal else int((lab != -100).sum())
            total, count = total + float(loss) * n, count + n
    return total / count


def train_losses(run_dir: Path) -> list[float]:
    steps = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    return [s["loss"] for s in steps if s["kind"] == "train" and "loss" in s]


# ---- causal-LM SFT -------------------------------------------------------------------------------


def test_prompt_and_padding_tokens_are_masked(causal_run: dict[str, Any]) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(causal_run["model"])
    tok.pad_token = tok.eos_token  # as loralab's load_tokenizer does for a tokenizer without one
    rows = qa_rows(4, 5)
    ex = lm_examples(tok, "causal-lm", [r["prompt"] for r in rows], [r["response"] for r in rows], 48)
    for (ids, labels), got_ids, got_labels in zip(
        causal_pairs(tok, rows), ex.input_ids, ex.labels, strict=True
    ):
        assert (got_ids, got_labels) == (ids, labels)
        # the chat template wraps the prompt: the masked part starts "<s> user :" and ends "assistant :"
        prompt = [t for t, lab in zip(got_ids, got_labels, strict=True) if lab == -100]
        assert tok.convert_ids_to_tokens(prompt[:3] + prompt[-2:]) == ["<s>", "user", ":", "assistant", ":"]
    batch = PadCollator(tok.pad_token_id, "right")(
        [{"input_ids": i, "labels": lab} for i, lab in zip(ex.input_ids, ex.labels, strict=True)]
    )
    pad = batch["attention_mask"] == 0
    assert pad.any() and (batch["labels"][pad] == -100).all()
    for row, (ids, labels) in enumerate(zip(ex.input_ids, ex.labels, strict=True)):
        n_prompt = labels.count(-100)
        assert (batch["labels"][row, :n_prompt] == -100).all()
        assert batch["labels"][row, n_prompt : len(ids)].tolist() == labels[n_prompt:]


def test_prompt_without_chat_template_is_plain_text(tmp_path: Path) -> None:
    _, tok = word_tokenizer(all_texts())
    ex = lm_examples(tok, "causal-lm", ["what color is the sea"], ["the sea is blue"], 48)
    prompt = tok("what color is the sea")["input_ids"]
    assert ex.labels[0] == [-100] * len(prompt) + tok("the sea is blue")["input_ids"] + [tok.eos_token_id]
    assert ex.input_ids[0][: len(prompt)] == prompt
    # truncation keeps labels aligned with the ids
    short = lm_examples(tok, "causal-lm", ["what color is the sea"], ["the sea is blue"], 7)
    assert len(short.input_ids[0]) == len(short.labels[0]) == 7 and short.truncated == 1


def test_causal_perplexity_matches_transformers_loss(causal_run: dict[str, Any]) -> None:
    metrics = json.loads((causal_run["run"] / "metrics.json").read_text())
    _, tuned, tok = trained(causal_run, "causal-lm")
    ref = hf_token_loss(tuned, causal_pairs(tok, causal_run["test"]), causal=True)
    assert metrics["split"] == "test" and metrics["n"] == len(causal_run["test"])
    assert metrics["loss"] == pytest.approx(ref, rel=1e-4)
    assert metrics["perplexity"] == pytest.approx(math.exp(ref), rel=1e-4)


def test_causal_response_is_learned(causal_run: dict[str, Any]) -> None:
    base, tuned, tok = trained(causal_run, "causal-lm")
    pairs = causal_pairs(tok, causal_run["test"])
    before, after = hf_token_loss(base, pairs, True), hf_token_loss(tuned, pairs, True)
    assert after < 0.5 * before, (before, after)
    losses = train_losses(causal_run["run"])
    assert len(losses) > 10 and sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3


def test_causal_predictions_csv(causal_run: dict[str, Any]) -> None:
    with (causal_run["run"] / "predictions.csv").open(encoding="utf-8") as f:
        preds = list(csv.DictReader(f))
    assert len(preds) == len(causal_run["test"])
    for p in preds:
        name, line = p["id"].rsplit(":", 1)
        src = causal_run["test"][int(line) - 1]
        assert name == "test.jsonl" and p["text"] == src["prompt"]
        assert p["gold"] == src["response"]  # eos is dropped by skip_special_tokens
    # a 6-colour lookup after 6 epochs: most greedy answers are exact
    assert sum(p["pred"] == p["gold"] for p in preds) >= len(preds) // 2, preds[:3]


def test_generation_is_left_padded_and_gets_no_token_type_ids(causal_run: dict[str, Any]) -> None:
    _, tuned, tok = trained(causal_run, "causal-lm")
    rows = causal_run["test"][:6]
    ex = lm_examples(tok, "causal-lm", [r["prompt"] for r in rows], [r["response"] for r in rows], 48)
    assert len({len(i) for i in ex.input_ids}) > 1  # prompts of different lengths: the batch pads
    seen: list[set[str]] = []
    inner = tuned.get_base_model()  # what generate() finally calls, under PEFT's wrapper
    forward = inner.forward

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(set(kwargs))
        return forward(*args, **kwargs)

    inner.forward = spy
    batched = generate(tuned, tok, ex, len(rows), batch_size=6)
    single = generate(tuned, tok, ex, len(rows), batch_size=1)
    assert batched == single  # left padding: a padded prompt continues exactly as an unpadded one
    assert seen and not any("token_type_ids" in s for s in seen)


# ---- seq2seq -------------------------------------------------------------------------------------


def seq2seq_pairs(tok: Any, rows: list[dict[str, str]]) -> list[tuple[list[int], list[int]]]:
    return [(tok(r["article"])["input_ids"], tok(r["title"])["input_ids"]) for r in rows]


def test_seq2seq_collator_feeds_the_decoder_the_shifted_labels() -> None:
    c = Seq2SeqCollator(1, "right", decoder_start_token_id=2)
    b = c([{"input_ids": [0, 5, 6, 2], "labels": [0, 7, 2]}, {"input_ids": [0, 5, 2], "labels": [0, 2]}])
    assert b["labels"].tolist() == [[0, 7, 2], [0, 2, -100]]
    assert b["decoder_input_ids"].tolist() == [[2, 0, 7], [2, 0, 2]]


def test_seq2seq_perplexity_matches_transformers_loss(seq2seq_run: dict[str, Any]) -> None:
    metrics = json.loads((seq2seq_run["run"] / "metrics.json").read_text())
    base, tuned, tok = trained(seq2seq_run, "seq2seq")
    pairs = seq2seq_pairs(tok, seq2seq_run["test"])
    ref = hf_token_loss(tuned, pairs, causal=False)
    assert metrics["loss"] == pytest.approx(ref, rel=1e-4)
    assert metrics["perplexity"] == pytest.approx(math.exp(ref), rel=1e-4)
    assert ref < 0.5 * hf_token_loss(base, pairs, causal=False)


def test_seq2seq_predictions_csv(seq2seq_run: dict[str, Any]) -> None:
    with (seq2seq_run["run"] / "predictions.csv").open(encoding="utf-8") as f:
        preds = list(csv.DictReader(f))
    assert [p["text"] for p in preds] == [r["article"] for r in seq2seq_run["test"]]
    assert [p["gold"] for p in preds] == [r["title"] for r in seq2seq_run["test"]]
    # a random 2-layer BART learns the loss quickly but greedy titles only partly in 6 epochs
    assert all(p["pred"] for p in preds) and any(p["pred"] == p["gold"] for p in preds), preds[:3]
