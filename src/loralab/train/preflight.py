"""Preflight: find what would fail in a long training run before it starts, in seconds, on a CPU.

Seed 003 lost 5 of 6 models to failures that appear only minutes into a run: bf16 weights with an
fp16 GradScaler, device_map="auto" without an offload folder, token_type_ids passed to a decoder-only
model, right padding for batched generation. Every check here is a small function; all of them run
and their findings are collected (never stop at the first). The last check builds a shrunken random
twin of the architecture (2 layers, hidden 64) and runs one real training step on it, so errors that
only the framework knows about surface too. No real weights are loaded.
"""

from __future__ import annotations

import inspect
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoTokenizer

from loralab.arch.hf import (
    auto_class,
    hf_config_from_dict,
    is_decoder_only,
    known_model_type,
    max_length_problem,
    max_length_warning,
)
from loralab.arch.resolve import hub_load_kwargs, resolve_model
from loralab.arch.twin import TWIN_VOCAB, twin_config, twin_lora
from loralab.config.formats.deepspeed import ds_get
from loralab.config.models import ExperimentConfig
from loralab.data import (
    RowSet,
    build_label_map,
    encode_rows,
    leakage_note,
    unseen_note,
)
from loralab.errors import ConfigError, LoralabError, PlanError, Problem
from loralab.plan.estimate.prefix_cache import estimate_prefix_cache
from loralab.plan.estimate.setup import Overrides, setup_from_config
from loralab.train.findings import Finding
from loralab.train.loading import (
    QLORA_ON_CPU,
    configured_device_map,
    lora_kwargs,
    model_input_names,
    model_path,
    set_pad_token_id,
)
from loralab.train.precision import PrecisionPolicy, choose_precision, conflicts
from loralab.train.tasks import task_for

# What CUDA's GradScaler raises on bf16 gradients (seed 003). torch's CPU kernel accepts bf16, so on a
# CPU the twin reproduces the CUDA failure from the gradients' dtype.
CUDA_BF16_UNSCALE = "\"_amp_foreach_non_finite_check_and_unscale_cuda\" not implemented for 'BFloat16'"
UNREACHABLE = (
    "the model's weights and tokenizer are not reachable from here (hub offline, only loralab's bundled "
    "config); these checks run when the model is reachable"
)
_BYTES = {"float32": 4.0, "float16": 2.0, "bfloat16": 2.0}


@dataclass
class PreflightReport:
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    def lines(self) -> list[str]:
        return [f.line() for f in self.findings]


@dataclass
class _Ctx:
    """What the checks share, computed once; None where it could not be obtained."""

    cfg: ExperimentConfig
    policy: PrecisionPolicy
    config: dict[str, Any] | None = None  # config.json
    hf_config: Any = None  # the transformers config object (None: model_type unknown here)
    lora: dict[str, Any] | None = None  # LoraConfig kwargs, layers resolved
    plan: Any = None
    tokenizer: Any = None
    source: str | None = None  # where config.json came from: local / hub / bundled (config only)


def run_preflight(
    cfg: ExperimentConfig, *, device: str | None = None, with_twin: bool = True
) -> PreflightReport:
    policy = choose_precision(cfg, device=device)
    ctx = _Ctx(cfg, policy)
    findings: list[Finding] = []
    checks: list[Callable[[_Ctx], list[Finding]]] = [
        check_model_config,
        check_max_length,
        check_plan,
        check_tokenizer,
        check_token_type_ids,
        check_precision,
        check_qlora,
        check_offload,
        check_data,
        check_memory,
        check_prefix_cache,
        check_sharded_save,
    ]
    if with_twin:
        checks.append(check_twin)
    for check in checks:
        try:
            findings.extend(check(ctx))
        except Exception as e:  # a crashing check must not hide the other checks' findings
            findings.extend(failed_check(check.__name__, e))
    return PreflightReport(findings)


def failed_check(name: str, e: BaseException) -> list[Finding]:
    """A check that could not run is an error, never a pass: what stopped it (a missing file, a
    config problem) stops the run too, or the run would start unchecked. The whole message is kept,
    every problem of a ConfigError with its key and fix."""
    if isinstance(e, ConfigError | PlanError):
        return [problem_finding(p) for p in e.problems]
    if isinstance(e, LoralabError):
        return [Finding(f"preflight.{name}", "error", e.message(), "")]
    where = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
    at = f" (at {os.path.basename(where.filename)}:{where.lineno})" if where else ""
    return [
        Finding(
            f"preflight.{name}",
            "error",
            f"the check could not run: {type(e).__name__}: {e}{at}",
            "if the config is right this is a bug in loralab; please report it with this message",
        )
    ]


def problem_finding(p: Problem) -> Finding:
    """A config Problem as an error finding: its key names the check, its file and message stay whole."""
    where = f"{p.file}: " if p.file else ""
    return Finding(p.key or "config", "error", where + p.message, p.fix)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


# ---- config-level ---------------------------------------------------------------------------------


def check_model_config(ctx: _Ctx) -> list[Finding]:
    """Resolve config.json; an unknown model_type needs remote code, which is off by default."""
    m = ctx.cfg.model
    try:
        resolved = resolve_model(m.name_or_path, revision=m.revision)
        ctx.config, ctx.source = resolved.config, resolved.source
    except LoralabError as e:
        return [
            Finding("model.resolve", "error", e.message(), "give a hub id, a bundled model or a local folder")
        ]
    model_type = str(ctx.config.get("model_type", ""))
    if known_model_type(ctx.config):
        ctx.hf_config = hf_config_from_dict(ctx.config)
        return []
    if m.trust_remote_code:
        return [
            Finding(
                "model.remote_code",
                "info",
                f"model_type {model_type!r} is not in transformers: its code comes from the model repo "
                "(trust_remote_code is on); the twin check is skipped",
                "",
            )
        ]
    return [
        Finding(
            "model.remote_code",
            "error",
            f"model_type {model_type!r} is unknown to the installed transformers, so loading needs the "
            "model's own code, and model.trust_remote_code is off (loralab's default)",
            "set model.trust_remote_code: true if you trust that repository's code, or upgrade transformers",
        )
    ]


def check_max_length(ctx: _Ctx) -> list[Finding]:
    """data.max_length within the model's positions: past an absolute position table the first long
    batch fails with an index error, hours in; past a rotary model's trained context quality falls."""
    if ctx.config is None:
        return []
    cfg = ctx.cfg
    problem = max_length_problem(ctx.config, cfg.max_length, file=str(cfg.source))
    if problem is not None:
        default = (
            "" if cfg.data.max_length is not None else f"not set, so {cfg.model.task}'s default applies: "
        )
        return [Finding("data.max_length", "error", default + problem.message, problem.fix)]
    warning = max_length_warning(ctx.config, cfg.max_length)
    if warning is None:
        return []
    fix = "lower data.max_length, or scale RoPE in the model config (rope_scaling)"
    return [Finding("data.max_length", "warning", warning, fix)]


def check_plan(ctx: _Ctx) -> list[Finding]:
    """The LoRA config resolves on the architecture: targets match, layers are in range."""
    if not ctx.cfg.lora.enable or ctx.config is None or ctx.hf_config is None:
        return []
    try:
        ctx.lora, ctx.plan = lora_kwargs(ctx.cfg)
    except PlanError as e:
        return [Finding(f"plan.{p.key or 'lora'}", "error", p.message, p.fix) for p in e.problems]
    except LoralabError as e:
        return [Finding("plan", "error", e.message(), "")]
    return []


def check_tokenizer(ctx: _Ctx) -> list[Finding]:
    """Pad token and padding side of a decoder-only model's tokenizer, as shipped (loralab fixes both)."""
    m = ctx.cfg.model
    if ctx.hf_config is None:
        return []
    if ctx.source == "bundled":  # only loralab's config copy is here; asking the hub retries for ~30 s
        return [Finding("tokenizer.load", "info", f"{UNREACHABLE}: tokenizer checks skipped", "")]
    try:
        name = model_path(m.name_or_path)
        # Offline, a hub id (even one in the cache) retries each missing optional file for ~23 s.
        hub = hub_load_kwargs(name, what="tokenizer", revision=m.revision)
        ctx.tokenizer = AutoTokenizer.from_pretrained(
            name, trust_remote_code=m.trust_remote_code, revision=m.revision, **hub
        )
    except Exception as e:
        # `train` loads the tokenizer from the same place: from a local folder that fails the same way
        # (an error); from the hub it may only be unreachable from here (a warning).
        local = ctx.source == "local"
        return [
            Finding(
                "tokenizer.load",
                "error" if local else "warning",
                f"the tokenizer of {m.name_or_path} does not load: {type(e).__name__}: {e}".strip(),
                "put the tokenizer files (tokenizer.json or its vocab files, tokenizer_config.json) in the "
                "model folder"
                if local
                else "check the hub id and your access to it (HF_TOKEN for gated models)",
            )
        ]
    tok = ctx.tokenizer
    vocab = _vocabulary_findings(tok, ctx.config or {}, m.name_or_path)
    if vocab:
        return vocab
    if tok.pad_token is None and getattr(tok, "eos_token", None) is None:
        # loralab pads with eos when there is no pad token; with neither, no batch can be built.
        return [
            Finding(
                "tokenizer.pad_token",
                "error",
                "the tokenizer has neither a pad token nor an eos token, so batches of unequal length "
                "cannot be padded",
                "add a pad token to the tokenizer files (tokenizer_config.json pad_token)",
            )
        ]
    if not is_decoder_only(ctx.hf_config):
        return []
    out: list[Finding] = []
    if tok.pad_token is None:
        out.append(
            Finding(
                "tokenizer.pad_token",
                "info",
                "the tokenizer has no pad token; batching would fail ('Asking to pad but the tokenizer "
                "does not have a padding token'). loralab uses eos as pad and sets model.config.pad_token_id",
                "",
            )
        )
    if tok.padding_side == "right" and m.task == "causal-lm":
        out.append(
            Finding(
                "tokenizer.padding_side",
                "warning",
                "the tokenizer pads on the right: batched generation with a decoder-only model then "
                "continues after pad tokens and produces garbage (seed 003). loralab loads it with "
                "padding_side='left'",
                "in your own generation code set tokenizer.padding_side = 'left'",
            )
        )
    return out


def _vocabulary_findings(tok: Any, config: dict[str, Any], name: str) -> list[Finding]:
    """A tokenizer that cannot feed this model. transformers 5 builds a tokenizer of only its special
    tokens for a folder without tokenizer files, so every word trains as the unknown token; and ids
    at or past the embedding's vocab_size fail with an index error at the first batch that holds one."""
    size, specials = len(tok), len(set(getattr(tok, "all_special_tokens", [])))
    if size <= specials:
        return [
            Finding(
                "tokenizer.vocabulary",
                "error",
                f"the tokenizer of {name} holds only its {size} special tokens: the folder has no "
                "vocabulary files, so every word would become the unknown token",
                "copy the model's tokenizer files (tokenizer.json, or vocab.txt / merges.txt, and "
                "tokenizer_config.json) into the folder",
            )
        ]
    vocab_size = config.get("vocab_size")
    if isinstance(vocab_size, int) and size > vocab_size:
        return [
            Finding(
                "tokenizer.vocab_size",
                "error",
                f"the tokenizer has {size} tokens but the model's embedding has vocab_size {vocab_size}: "
                f"ids {vocab_size} and above fail with an index error",
                "use the tokenizer that belongs to the model",
            )
        ]
    return []


def _model_class(ctx: _Ctx) -> Any:
    auto = auto_class(ctx.cfg.model.task)
    return auto._model_mapping[type(ctx.hf_config)]


def check_token_type_ids(ctx: _Ctx) -> list[Finding]:
    """The tokenizer emits token_type_ids but the model's forward has no such parameter (seed 003)."""
    if ctx.tokenizer is None or ctx.hf_config is None:
        return []
    if "token_type_ids" not in getattr(ctx.tokenizer, "model_input_names", []):
        return []
    cls = _model_class(ctx)
    if "token_type_ids" in model_input_names(cls, ctx.tokenizer):
        return []
    return [
        Finding(
            "inputs.token_type_ids",
            "warning",
            f"the tokenizer returns token_type_ids but {cls.__name__}.forward does not take them; passing "
            "the tokenizer's output straight to the model fails (seed 003's inference step). "
            "loralab drops them",
            "in your own code call tokenizer(..., return_token_type_ids=False)",
        )
    ]


def check_precision(ctx: _Ctx) -> list[Finding]:
    return conflicts(ctx.cfg, ctx.policy)


def _quantized(cfg: ExperimentConfig) -> bool:
    q = cfg.model.quantization or {}
    return bool(q.get("load_in_4bit") or q.get("load_in_8bit"))


def check_qlora(ctx: _Ctx) -> list[Finding]:
    if not _quantized(ctx.cfg):
        return []
    if ctx.policy.device != "cuda":
        return [Finding("qlora.device", "error", QLORA_ON_CPU, "remove model.quantization, or run on a GPU")]
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return [Finding("qlora.bitsandbytes", "error", QLORA_ON_CPU, "pip install bitsandbytes")]
    return []


def check_offload(ctx: _Ctx) -> list[Finding]:
    """device_map (configured, or implied by QLoRA) gets an offload folder (seed 003's KULLM-v2)."""
    if configured_device_map(ctx.cfg) is None and not _quantized(ctx.cfg):
        return []
    return [
        Finding(
            "loading.offload_folder",
            "info",
            "with a device_map, accelerate may offload layers to disk and then needs an offload_folder "
            "(seed 003: 'The current device_map had weights offloaded to the disk'); loralab passes "
            "offload_folder=<run dir>/offload",
            "",
        )
    ]


DATA_FILES = ("train_file", "validation_file", "test_file")


def check_data(ctx: _Ctx) -> list[Finding]:
    """The data files read as `train` reads them: each must exist, parse and hold usable rows; held-out
    files must not be the training data; seq-cls labels must fit num_labels and be seen in training."""
    cfg = ctx.cfg
    if not cfg.data.train_file:
        # A warning, not an error: `train` stops on it at once, in seconds, with this same key; the
        # model-side checks above are what a data-less file (a model being tried out) asks for.
        return [
            Finding(
                "data.train_file",
                "warning",
                "not set: the data checks are skipped, and train stops at once with nothing to train on",
                "set data.train_file",
            )
        ]
    out: list[Finding] = []
    sets: dict[str, RowSet] = {}
    task = task_for(cfg)
    for key in DATA_FILES:
        try:
            rowset = task.read_split(key)
        except LoralabError as e:
            out.extend(_data_error(key, e))
            continue
        if rowset is None:
            continue
        skipped = rowset.skipped_summary()
        if not rowset.rows:
            why = f": {skipped}" if skipped else ""
            fix = "check data.text_field / data.label_field and the file"
            out.append(Finding(f"data.{key}", "error", f"{rowset.file} has no usable rows{why}", fix))
            continue
        if skipped:
            out.append(
                Finding(
                    f"data.{key}", "warning", skipped, "correct these rows, or accept that they are left out"
                )
            )
        sets[key] = rowset
    train = sets.get("train_file")
    if train is None:
        return out
    for key in DATA_FILES[1:]:
        other = sets.get(key)
        note = leakage_note(train.file, train.rows, other.file, other.rows) if other is not None else None
        if note is not None:
            fix = f"use a held-out {key.removesuffix('_file')} file that shares no rows with training"
            out.append(Finding(f"data.{key}", "warning", note, fix))
    if cfg.model.task == "seq-cls":
        out.extend(_label_findings(ctx, train, sets))
    return out


def _data_error(key: str, e: LoralabError) -> list[Finding]:
    if isinstance(e, ConfigError | PlanError):
        return [problem_finding(p) for p in e.problems]
    return [Finding(f"data.{key}", "error", e.message(), "")]


def _label_findings(ctx: _Ctx, train: RowSet, sets: dict[str, RowSet]) -> list[Finding]:
    """What `train` refuses about the labels (a count other than num_labels, nothing to evaluate on),
    and held-out labels it never saw, which are left out of evaluation."""
    cfg, d = ctx.cfg, ctx.cfg.data
    labels = sorted(set(train.labels))
    out: list[Finding] = []
    n = cfg.model.num_labels
    name = os.path.basename(train.file)
    if not d.label_field:
        out.append(
            Finding(
                "data.label_field",
                "error",
                "not set: a classification run needs the column that holds each row's class",
                "set data.label_field",
            )
        )
    elif len(labels) < 2:
        out.append(
            Finding(
                "data.label_field",
                "error",
                f"{name} has {len(labels)} distinct label(s) in '{d.label_field}'; classification "
                "needs 2 or more",
                "check data.label_field and the file",
            )
        )
    elif n is not None and len(labels) != n:
        why = (
            "the loss fails on label ids >= num_labels"
            if len(labels) > n
            else f"{n - len(labels)} classes of the head would never be trained"
        )
        out.append(
            Finding(
                "data.num_labels",
                "error",
                f"{name} has {len(labels)} distinct labels but model.num_labels is {n}: {why}, and train "
                "refuses the mismatch",
                f"set model.num_labels: {len(labels)}, or remove it (loralab counts the training labels)",
            )
        )
    if labels:
        label_map = build_label_map(labels)
        for key in DATA_FILES[1:]:
            other = sets.get(key)
            if other is None:
                continue
            enc = encode_rows(other.rows, label_map)
            note = unseen_note(other.file, enc)
            if note is None:
                continue
            what = key.removesuffix("_file")
            if enc.rows:
                out.append(Finding(f"data.{key}", "warning", note, "re-split the data stratified by label"))
            else:
                out.append(
                    Finding(
                        f"data.{key}",
                        "error",
                        f"{note}; no {what} row is left to evaluate on",
                        "check that the file's label column uses the training file's labels",
                    )
                )
    evaluates = str(cfg.training_args.get("eval_strategy", "no")) != "no"
    if not d.test_file and not d.validation_file and not evaluates:
        out.append(
            Finding(
                "data.test_file",
                "error",
                "nothing to evaluate the run on: no test_file, no validation_file and no evaluation "
                "during training",
                "set data.test_file (or data.validation_file, or training_args.eval_strategy: epoch)",
            )
        )
    return out


def available_memory(device: str) -> int:
    """Free bytes on the GPU, or the machine's physical memory (no psutil) otherwise."""
    if device == "cuda":
        free, _ = torch.cuda.mem_get_info()
        return int(free)
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def check_memory(ctx: _Ctx) -> list[Finding]:
    """The base weights alone must fit (activations and optimizer state come on top)."""
    if ctx.plan is None:
        return []
    q = ctx.cfg.model.quantization or {}
    per = 0.5 if q.get("load_in_4bit") else 1.0 if q.get("load_in_8bit") else _BYTES[ctx.policy.load_dtype]
    need = int(ctx.plan.arch.total_params * per)
    have = available_memory(ctx.policy.device)
    if need <= have:
        return []
    # Weights that cannot be loaded here will be trained on another machine, whose memory counts.
    elsewhere = ctx.source == "bundled"
    return [
        Finding(
            "memory.weights",
            "warning" if elsewhere else "error",
            (f"{UNREACHABLE}, so the run happens elsewhere; here " if elsewhere else "")
            + f"the base weights need {need / 2**30:.1f} GiB in {ctx.policy.load_dtype} but "
            f"{ctx.policy.device} has {have / 2**30:.1f} GiB",
            "use a smaller model, QLoRA (model.quantization: {load_in_4bit: true}) on a GPU, "
            "or a bigger device",
        )
    ]


def check_prefix_cache(ctx: _Ctx) -> list[Finding]:
    """Whether the frozen layers below the adapters will be computed once (`prefix_cache`), and why not
    when they will not: foreseen from the plan; training decides on the loaded model by the same rules
    and records its verdict in record.json."""
    if ctx.plan is None or ctx.config is None:
        return []
    cfg = ctx.cfg
    setup, _ = setup_from_config(cfg, ctx.plan.arch, Overrides())
    side = getattr(ctx.tokenizer, "padding_side", None) if cfg.model.task == "seq-cls" else "right"
    est = estimate_prefix_cache(
        ctx.plan,
        ctx.config,
        setup,
        mode=cfg.prefix_cache,
        neftune_alpha=cfg.training_args.get("neftune_noise_alpha"),
        padding_side=side,
    )
    if not est.used and est.boundary_layer == 0 and cfg.prefix_cache == "auto":
        return []  # nothing below the adapters is frozen: nothing to say
    text = est.reason
    if est.used and est.speedup_step:
        text += f"; predicted {est.speedup_step:.2f}x per training step"
    fix = ""
    if cfg.prefix_cache == "on" and est.used and "eval mode" in est.reason:
        fix = "this changes what is trained (the prefix's dropout is off); prefix_cache: auto keeps it exact"
    return [Finding("prefix_cache", "info", text, fix)]


def check_sharded_save(ctx: _Ctx) -> list[Finding]:
    """Under ZeRO-3 the adapter can only be written as safetensors when the shards are gathered at save
    time. Without `stage3_gather_16bit_weights_on_model_save` the Trainer writes a ZeRO checkpoint
    instead and no adapter_model.safetensors (transformers' Trainer.save_model; peft #2892): the run
    would train for hours and then fail the saved-adapter check."""
    ta = ctx.cfg.training_args
    if ta.get("fsdp") and ctx.policy.device == "cpu":
        # accelerate's AcceleratorState only turns FSDP on for GPU-type devices (MULTI_GPU, ...):
        # on CPU processes the plugin is dropped without a word and DDP runs.
        return [
            Finding(
                "training_args.fsdp",
                "warning",
                "FSDP runs on GPUs only: on cpu accelerate drops the FSDP plugin and the run is DDP "
                "(each process holds the whole model)",
                "drop training_args.fsdp for CPU runs, or run on GPUs",
            )
        ]
    ds = ctx.cfg.deepspeed
    if ds_get(ds, "zero_optimization.stage") != 3:
        return []
    if ds_get(ds, "zero_optimization.stage3_gather_16bit_weights_on_model_save") is True:
        return []  # "auto" is filled from accelerate's zero3_save_16bit_model, false unless configured
    where = f" in {ctx.cfg.deepspeed_file}" if ctx.cfg.deepspeed_file else ""
    return [
        Finding(
            "deepspeed.zero_optimization.stage3_gather_16bit_weights_on_model_save",
            "error",
            f"ZeRO-3 without stage3_gather_16bit_weights_on_model_save{where}: the Trainer would save a "
            "ZeRO checkpoint and no adapter_model.safetensors (peft #2892)",
            "set zero_optimization.stage3_gather_16bit_weights_on_model_save: true",
        )
    ]


# ---- the twin ------------------------------------------------------------------------------------


def _twin_batch(model: Any, ctx: _Ctx, torch: Any) -> dict[str, Any]:
    """Two sequences of 8 tokens, the second padded on the side the pipeline pads."""
    cfg = model.config
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, TWIN_VOCAB, (2, 8), generator=g)
    mask = torch.ones_like(ids)
    left = ctx.tokenizer is not None and getattr(ctx.tokenizer, "padding_side", "right") == "left"
    pad_cols = slice(0, 3) if left or ctx.cfg.model.task == "causal-lm" else slice(5, 8)
    mask[1, pad_cols] = 0
    ids[1, pad_cols] = cfg.pad_token_id if cfg.pad_token_id is not None else 0
    batch: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
    names = (
        model_input_names(model, ctx.tokenizer)
        if ctx.tokenizer is not None
        else (["token_type_ids"] if "token_type_ids" in _forward_params(model) else [])
    )
    if "token_type_ids" in names:  # exactly when the real pipeline would pass them
        batch["token_type_ids"] = torch.zeros_like(ids)
    task = ctx.cfg.model.task
    if task == "seq-cls":
        batch["labels"] = torch.tensor([0, cfg.num_labels - 1])
    elif task == "causal-lm":
        batch["labels"] = ids.masked_fill(mask == 0, -100)
    else:
        batch["labels"] = torch.randint(4, TWIN_VOCAB, (2, 6), generator=g)
    return batch


def _forward_params(model: Any) -> set[str]:
    return set(inspect.signature(model.forward).parameters)


def _unscale(model: Any, loss: Any, device: str, torch: Any) -> None:
    """The GradScaler path of an fp16 run: scale, backward, unscale_ (where seed 003 failed)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.0)
    scaler = torch.amp.GradScaler(device)
    scaler.scale(loss).backward()
    if device == "cpu" and any(p.grad is not None and p.grad.dtype == torch.bfloat16 for p in params):
        raise NotImplementedError(CUDA_BF16_UNSCALE + " (CUDA kernel; reproduced from the gradients' dtype)")
    scaler.unscale_(opt)


def check_twin(ctx: _Ctx) -> list[Finding]:
    """One forward+backward step of a shrunken random twin under the configured precision path."""
    if ctx.hf_config is None or (ctx.cfg.lora.enable and ctx.lora is None):
        return [Finding("twin", "info", "twin step skipped (the model or LoRA config did not resolve)", "")]
    cfg, policy = ctx.cfg, ctx.policy
    # The GradScaler path runs when loralab would pick it or the user's training_args force fp16;
    # then the twin's weights take the configured dtype, as they would on the GPU (seed 003).
    scaler = policy.grad_scaler or bool(cfg.training_args.get("fp16"))
    dtype = cfg.model.torch_dtype if scaler and cfg.model.torch_dtype in ("bfloat16", "float16") else None
    dtype = dtype or policy.load_dtype
    device = "cuda" if policy.device == "cuda" else "cpu"
    stage = "build"
    try:
        tcfg = twin_config(ctx.hf_config, cfg.model.task, cfg.model.num_labels)
        torch.manual_seed(0)
        model = auto_class(cfg.model.task).from_config(tcfg).to(dtype=getattr(torch, dtype), device=device)
        set_pad_token_id(model, None)
        if cfg.lora.enable and ctx.lora is not None:
            stage = "apply LoRA"
            model = get_peft_model(model, LoraConfig(**twin_lora(ctx.lora, ctx.plan.arch.num_layers)))
        model.train()
        stage = "forward"
        batch = {k: v.to(device) for k, v in _twin_batch(model, ctx, torch).items()}
        with torch.autocast(
            device, dtype=torch.bfloat16 if policy.bf16 else torch.float16, enabled=policy.bf16 or policy.fp16
        ):
            loss = model(**batch).loss
        stage = "backward with GradScaler" if scaler else "backward"
        if scaler:
            _unscale(model, loss, device, torch)
        else:
            loss.backward()
    except Exception as e:
        return [_twin_finding(stage, e, tcfg_type=str(ctx.config.get("model_type") if ctx.config else "?"))]
    return [Finding("twin", "info", f"one training step of a 2-layer {dtype} twin passed ({stage})", "")]


def _twin_finding(stage: str, e: BaseException, tcfg_type: str) -> Finding:
    fix = "see the error; the real run fails the same way at this step"
    if "BFloat16" in str(e) and "unscale" in str(e):
        fix = "use bf16: true instead of fp16: true (no GradScaler), or load the weights in float16"
    return Finding(
        f"twin.{stage.split()[0].lower()}",
        "error",
        f"a 2-layer random {tcfg_type} twin failed at {stage}: {_first_line(e)}",
        fix,
    )
