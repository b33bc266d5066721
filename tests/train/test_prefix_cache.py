"""The frozen-prefix cache (loralab.train.prefix_cache) is exact: one training step from cached prefix
states gives the loss and every LoRA gradient of the uncached step, on tiny dropout-free models of
each family loralab supports (Llama, Qwen3, GPT-2, BERT; seq-cls and causal-LM; BART with adapters in
the decoder only, where the encoder's output is what is cached)."""

from __future__ import annotations

import copy
import random
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from rich.console import Console

from loralab.train.batching import Examples, PadCollator
from loralab.train.lm import Seq2SeqCollator
from loralab.train.prefix_cache import PrefixCache, decide

VOCAB = 50
LAYERS = 4


def _cfg(**training_args: Any) -> Any:
    model = SimpleNamespace(name_or_path="tiny-test-model", revision=None, quantization=None)
    return SimpleNamespace(model=model, training_args=training_args)


def _examples(n: int = 7, seed: int = 0, *, lm: bool = False) -> Examples:
    rng = random.Random(seed)
    ids = [[rng.randrange(4, VOCAB) for _ in range(rng.randint(3, 11))] for _ in range(n)]
    if lm:
        labels: list[Any] = [[-100] * 2 + row[2:] for row in ids]
    else:
        labels = [i % 3 for i in range(n)]
    return Examples(input_ids=ids, labels=labels)


def _model(family: str, task: str, *, dropout: float = 0.0) -> Any:
    import transformers as tf

    torch.manual_seed(0)
    common = {"vocab_size": VOCAB, "pad_token_id": 0, "num_labels": 3}
    if family == "llama":
        conf = tf.LlamaConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=LAYERS, num_attention_heads=4,
            num_key_value_heads=2, attention_dropout=dropout, **common,
        )  # fmt: skip
    elif family == "qwen3":
        conf = tf.Qwen3Config(
            hidden_size=32, intermediate_size=64, num_hidden_layers=LAYERS, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, attention_dropout=dropout, **common,
        )  # fmt: skip
    elif family == "gpt2":
        conf = tf.GPT2Config(
            n_embd=32, n_layer=LAYERS, n_head=4, n_positions=64, resid_pdrop=dropout, embd_pdrop=dropout,
            attn_pdrop=dropout, **common,
        )  # fmt: skip
    elif family == "bert":
        conf = tf.BertConfig(
            hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=64, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
            **common,
        )  # fmt: skip
    else:
        conf = tf.BartConfig(
            d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
            bos_token_id=2, eos_token_id=3, decoder_start_token_id=3, dropout=dropout,
            attention_dropout=dropout, activation_dropout=dropout, **common,
        )  # fmt: skip
    cls = {
        "seq-cls": tf.AutoModelForSequenceClassification,
        "causal-lm": tf.AutoModelForCausalLM,
        "seq2seq": tf.AutoModelForSeq2SeqLM,
    }[task]
    return cls.from_config(conf, attn_implementation="eager" if family == "gpt2" else "sdpa")


TARGETS = {
    "llama": ["q_proj", "v_proj", "down_proj"],
    "qwen3": ["q_proj", "k_proj", "o_proj", "up_proj"],
    "gpt2": ["c_attn", "c_fc"],
    "bert": ["query", "value", "dense"],
}


def _peft(model: Any, family: str, task: str, boundary: int, **extra: Any) -> Any:
    from peft import LoraConfig, get_peft_model

    if family == "bart":
        # the decoder only: every target name below is a decoder module's
        kw: dict[str, Any] = {"target_modules": r"model\.decoder\.layers\.\d+\.(self_attn\.(q|v)_proj|fc1)"}
    else:
        kw = {"target_modules": TARGETS[family], "layers_to_transform": list(range(boundary, LAYERS))}
    task_type = {"seq-cls": "SEQ_CLS", "causal-lm": "CAUSAL_LM", "seq2seq": "SEQ_2_SEQ_LM"}[task]
    torch.manual_seed(1)
    lora = LoraConfig(
        task_type=task_type, r=4, lora_alpha=8, lora_dropout=0.0, init_lora_weights=False, **kw, **extra
    )
    return get_peft_model(model, lora)


def _loss(model: Any, batch: dict[str, Any], task: str) -> torch.Tensor:
    batch = dict(batch)
    labels = batch.pop("labels")
    logits = model(**batch).logits.float()
    if task == "seq-cls":
        return F.cross_entropy(logits, labels)
    shift = 0 if task == "seq2seq" else 1
    lg, lb = logits[:, : logits.size(1) - shift], labels[:, shift:]
    return F.cross_entropy(lg.reshape(-1, lg.size(-1)), lb.reshape(-1), ignore_index=-100)


def _step(model: Any, batch: dict[str, Any], task: str) -> tuple[float, dict[str, torch.Tensor]]:
    model.train()
    model.zero_grad()
    loss = _loss(model, batch, task)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None for g in grads.values())
    return float(loss), grads


def _cache(model: Any, ex: Examples, tmp: Path, mode: str = "auto", **ta: Any) -> PrefixCache:
    decision = decide(
        model, _cfg(**ta), mode=mode, padding_side="right", probe_ids=ex.input_ids[0], token_type=False
    )
    cache = PrefixCache(decision, tmp / "cache")
    if decision.used:
        cache.prepare(_cfg(**ta), model, {"train": ex}, Console(quiet=True))
    return cache


def _collator(task: str) -> PadCollator:
    return (
        Seq2SeqCollator(0, padding_side="right", decoder_start_token_id=3)
        if task == "seq2seq"
        else PadCollator(0)
    )


CASES = [
    ("llama", "seq-cls", 2),
    ("llama", "causal-lm", 3),
    ("qwen3", "seq-cls", 2),
    ("qwen3", "causal-lm", 1),
    ("gpt2", "seq-cls", 2),
    ("gpt2", "causal-lm", 2),
    ("bert", "seq-cls", 3),
    ("bart", "seq2seq", 2),
]


@pytest.mark.parametrize(("family", "task", "boundary"), CASES)
def test_cached_step_equals_uncached_step(tmp_path: Path, family: str, task: str, boundary: int) -> None:
    ex = _examples(lm=task != "seq-cls")
    model = _peft(_model(family, task), family, task, boundary)
    cache = _cache(model, ex, tmp_path)
    assert cache.used, cache.decision.reason
    if family == "bart":
        assert cache.decision.encoder  # the whole encoder is frozen: its output is cached
    else:
        assert cache.decision.boundary == boundary
    plain = _collator(task)
    cached = cache.collator(plain)
    items = [{"input_ids": ex.input_ids[i], "labels": ex.labels[i]} for i in (0, 3, 5, 6)]
    loss0, grads0 = _step(model, plain(items), task)  # before install: the whole model runs
    cache.install(model)
    batch = cached(items)
    assert batch["prefix_states"].shape[:2] == batch["input_ids"].shape
    loss1, grads1 = _step(model, batch, task)
    assert loss1 == pytest.approx(loss0, rel=1e-5, abs=1e-6)
    assert grads1.keys() == grads0.keys()
    for name in grads0:
        torch.testing.assert_close(grads1[name], grads0[name], rtol=1e-4, atol=1e-6, msg=name)
    # a batch without cached states (generation, new text) still runs the whole model
    loss2, _ = _step(model, plain(items), task)
    assert loss2 == pytest.approx(loss0, rel=1e-5)


def test_prefix_is_skipped_and_not_backpropagated(tmp_path: Path) -> None:
    """The cached step runs no prefix layer forward or backward, with gradient checkpointing too."""
    ex = _examples(lm=True)
    model = _peft(_model("llama", "causal-lm"), "llama", "causal-lm", 3)
    cache = _cache(model, ex, tmp_path)
    base = model.get_base_model()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    items = [{"input_ids": ex.input_ids[i], "labels": ex.labels[i]} for i in range(4)]
    _, grads0 = _step(model, PadCollator(0)(items), "causal-lm")
    cache.install(model)
    cache.no_prefix_checkpointing()
    calls: list[str] = []
    for i, layer in enumerate(base.model.layers):
        layer.mlp.register_forward_hook(lambda *_, i=i: calls.append(f"fwd {i}"))
        layer.mlp.register_full_backward_hook(lambda *_, i=i: calls.append(f"bwd {i}"))
    _, grads1 = _step(model, cache.collator(PadCollator(0))(items), "causal-lm")
    # only layer 3 runs: forward, its recomputation under checkpointing, backward
    assert sorted(set(calls)) == ["bwd 3", "fwd 3"]
    for name in grads0:
        torch.testing.assert_close(grads1[name], grads0[name], rtol=1e-4, atol=1e-6, msg=name)


def test_dropout_prefix_auto_is_off_on_caches_in_eval_mode(tmp_path: Path) -> None:
    ex = _examples()
    model = _peft(_model("llama", "seq-cls", dropout=0.1), "llama", "seq-cls", 2)
    auto = decide(
        model, _cfg(), mode="auto", padding_side="right", probe_ids=ex.input_ids[0], token_type=False
    )
    assert not auto.used
    assert "not deterministic" in auto.reason and "attention_dropout 0.1" in auto.reason
    assert "prefix_cache: on" in auto.reason  # the way to have it anyway
    on = decide(model, _cfg(), mode="on", padding_side="right", probe_ids=ex.input_ids[0], token_type=False)
    assert on.used and on.boundary == 2
    assert on.eval_mode_note is not None and "eval mode" in on.eval_mode_note
    assert on.to_json()["note"] == on.eval_mode_note  # record.json carries it


def test_nothing_cached_when_the_prefix_is_not_frozen_or_not_exact(tmp_path: Path) -> None:
    ex = _examples()

    def verdict(model: Any, *, mode: str = "auto", side: str = "right", **ta: Any) -> Any:
        return decide(
            model, _cfg(**ta), mode=mode, padding_side=side, probe_ids=ex.input_ids[0], token_type=False
        )

    every_layer = _peft(_model("llama", "seq-cls"), "llama", "seq-cls", 0)
    assert not verdict(every_layer).used and "layer 0 trains" in verdict(every_layer).reason
    emb = _peft(_model("llama", "seq-cls"), "llama", "seq-cls", 2, modules_to_save=["embed_tokens"])
    d = verdict(emb)
    assert not d.used and "embed_tokens" in d.reason and "before the layers" in d.reason
    bias = _peft(_model("gpt2", "seq-cls"), "gpt2", "seq-cls", 2, bias="all")  # trainable biases in layer 0
    assert verdict(bias).boundary == 0 and not verdict(bias).used
    upper = _peft(_model("llama", "seq-cls"), "llama", "seq-cls", 2)
    assert verdict(upper).used
    assert not verdict(upper, mode="off").used
    assert "left" in verdict(upper, side="left").reason and not verdict(upper, side="left").used
    neft = verdict(upper, neftune_noise_alpha=5)
    assert not neft.used and "neftune" in neft.reason


# ---- the store: reuse, invalidation, damage -----------------------------------------------------------


def _events(cache: PrefixCache) -> list[str]:
    return [e.split(" ")[1] for e in cache.events]  # "train: built" -> "built"


def test_cache_is_reused_for_the_same_key_and_rebuilt_when_anything_changes(tmp_path: Path) -> None:
    ex = _examples(lm=True)
    model = _peft(_model("llama", "causal-lm"), "llama", "causal-lm", 2)
    assert _events(_cache(model, ex, tmp_path)) == ["built"]
    again = _cache(model, ex, tmp_path)
    assert _events(again) == ["reused"]
    # other rows (another data file, tokenizer, template or max_length all change the token ids)
    cut = Examples(input_ids=[r[:5] for r in ex.input_ids], labels=[r[:5] for r in ex.labels])
    assert _events(_cache(model, cut, tmp_path)) == ["built"]
    # another boundary: another key, another folder
    lower = _cache(_peft(_model("llama", "causal-lm"), "llama", "causal-lm", 1), ex, tmp_path)
    assert _events(lower) == ["built"] and lower.folder != again.folder
    # a truncated shard is never read: rebuilt, with a warning naming the file
    assert again.folder is not None
    shard = next(again.folder.glob("train-*.bin"))
    shard.write_bytes(shard.read_bytes()[:-100])
    console = Console(record=True, width=400)
    decision = again.decision
    fixed = PrefixCache(decision, tmp_path / "cache")
    fixed.prepare(_cfg(), model, {"train": ex}, console)
    assert fixed.events[0].startswith("train: rebuilt") and "damaged" in fixed.events[0]
    assert f"{shard} is damaged" in console.export_text().replace("\n", "")
    assert shard.stat().st_size == fixed.bytes
    # same size, other content: the sha256 in the manifest catches it
    data = bytearray(shard.read_bytes())
    data[0] ^= 0xFF
    shard.write_bytes(bytes(data))
    flipped = PrefixCache(decision, tmp_path / "cache")
    flipped.prepare(_cfg(), model, {"train": ex}, Console(quiet=True))
    assert "sha256" in flipped.events[0]


def test_cache_bytes_are_tokens_times_hidden_times_dtype(tmp_path: Path) -> None:
    ex = _examples()
    cache = _cache(_peft(_model("qwen3", "seq-cls"), "qwen3", "seq-cls", 2), ex, tmp_path)
    tokens = sum(len(r) for r in ex.input_ids)
    assert cache.bytes == tokens * 32 * 4  # hidden 32, float32 on the CPU
    assert cache.to_json()["bytes_on_disk"] == cache.bytes


def test_config_modes_and_yaml_booleans(tmp_path: Path) -> None:
    """`prefix_cache: on` is the boolean true in YAML 1.1: it is read as the word the user wrote."""
    from loralab.config import load_experiment
    from loralab.errors import ConfigError

    def load(value: str) -> Any:
        p = tmp_path / "exp.yaml"
        p.write_text(
            f"model: {{name_or_path: gpt2, task: causal-lm}}\nprefix_cache: {value}\n", encoding="utf-8"
        )
        return load_experiment(p)

    assert load("on").prefix_cache == "on"
    assert load("off").prefix_cache == "off"
    assert load("auto").prefix_cache == "auto"
    with pytest.raises(ConfigError) as e:
        load("sometimes")
    assert "prefix_cache" in str(e.value) and "auto" in str(e.value)


def test_other_ranks_wait_for_rank_0s_build_and_give_up_when_it_stalls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under DDP rank 0 builds; a waiting rank reads rank 0's files (never builds them itself) as soon
    as the manifest is there, and stops with an error when rank 0's heartbeat stops moving."""
    import threading

    import loralab.train.prefix_cache as pc

    monkeypatch.setattr(pc, "WAIT_POLL_SECONDS", 0.05)
    ex = _examples(lm=True)
    model = _peft(_model("llama", "causal-lm"), "llama", "causal-lm", 2)
    decision = decide(model, _cfg(), mode="auto", padding_side="right", probe_ids=ex.input_ids[0],
                      token_type=False)  # fmt: skip
    builds: list[str] = []
    real_build = PrefixCache._build

    def slow_build(self: PrefixCache, *a: Any, **kw: Any) -> Any:
        builds.append(threading.current_thread().name)
        time.sleep(0.5)  # the waiter polls meanwhile and finds no manifest
        return real_build(self, *a, **kw)

    monkeypatch.setattr(PrefixCache, "_build", slow_build)
    # the waiter has its own copy of the model, as another process has (the build's hooks are per model)
    twin = copy.deepcopy(model)
    rank0 = PrefixCache(decision, tmp_path / "cache")
    builder = threading.Thread(
        target=rank0.prepare, args=(_cfg(), model, {"train": ex}, Console(quiet=True)), name="rank0"
    )
    builder.start()
    waiter = PrefixCache(decision, tmp_path / "cache")
    waiter.prepare(_cfg(), twin, {"train": ex}, Console(quiet=True), wait_seconds=30)
    builder.join()
    assert builds == ["rank0"]  # one build, by rank 0
    assert waiter.events[0].startswith("train: built by rank 0 (waited ")
    assert waiter.bytes == rank0.bytes > 0
    # rank 0 died mid-build: no manifest ever comes and the heartbeat stands still
    other = Examples(input_ids=[r[:4] for r in ex.input_ids], labels=[r[:4] for r in ex.labels])
    t0 = time.monotonic()
    with pytest.raises(pc.PrefixCacheError, match="no progress from rank 0"):
        PrefixCache(decision, tmp_path / "cache").prepare(
            _cfg(), twin, {"train": other}, Console(quiet=True), wait_seconds=0.3
        )
    assert time.monotonic() - t0 < 10
