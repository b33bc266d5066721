"""`loralab plan` and `loralab modules`: the plan of an experiment file with its memory, time and twin
measurement (which read the training data and the tokenizer), rendered or as JSON."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from loralab.arch.cache import get_arch_record
from loralab.arch.hf import default_task, max_length_problem, max_length_warning
from loralab.arch.records import ArchRecord, ModuleRecord, name_pattern
from loralab.arch.resolve import resolve_model
from loralab.commands.launch import launch_json, print_launch, write_launch
from loralab.config import load_experiment
from loralab.config.models import TASK_TO_TASK_TYPE, ExperimentConfig, carves_validation, lm_validation_rows
from loralab.data import infer_num_labels, read_rows
from loralab.errors import ConfigError, Problem
from loralab.io import print_json
from loralab.plan.estimate.memory import MemoryEstimate, TrainSetup, estimate_memory
from loralab.plan.estimate.prefix_cache import PrefixCacheEstimate, SplitTokens, estimate_prefix_cache
from loralab.plan.estimate.render_memory import measure_table, print_memory, print_prefix_cache, time_table
from loralab.plan.estimate.setup import Overrides, detected_gpu_memory, parse_size, setup_from_config
from loralab.plan.estimate.timing import GPUS, TimeEstimate, estimate_time
from loralab.plan.experiment import plan_experiment
from loralab.plan.measure.twin import TwinComparison, measure_twin
from loralab.plan.planner import Plan
from loralab.plan.render import plan_to_json, print_plan
from loralab.train.loading import load_tokenizer


def run_plan(
    config: Path,
    *,
    as_json: bool,
    with_options: bool,
    out: Console,
    extra: PlanExtras | None = None,
) -> None:
    cfg = load_experiment(config, fmt=extra.fmt if extra is not None else None)
    notes = list(cfg.notes)
    m = cfg.model
    alias = resolve_model(m.name_or_path, revision=m.revision, trust_remote_code=m.trust_remote_code).note
    if alias:  # `gpt2` planned as openai-community/gpt2: say so
        notes.append(alias)
    if cfg.model.task == "seq-cls" and cfg.model.num_labels is None:
        cfg.model.num_labels, note = infer_num_labels(cfg)
        notes.append(note)
    plan = plan_experiment(cfg, with_options=with_options)
    extra = extra or PlanExtras()
    counter = TokenCounter(cfg)
    memory, time_est, measured = plan_extras(cfg, plan, extra, config, counter=counter)
    cache = plan_prefix_cache(cfg, plan, memory, extra, counter)
    launch = None
    if extra.write_launch is not None:
        gpus = (extra.overrides.gpus if extra.overrides is not None else None) or 1
        launch = write_launch(
            cfg, plan, memory, extra.write_launch, gpus=gpus, nodes=extra.nodes, layout=extra.layout
        )
    if as_json:
        obj = plan_to_json(plan)
        obj["notes"] = notes + obj["notes"] + (memory.notes if memory else [])
        if memory is not None:
            obj["memory"] = memory.to_json()
        if time_est is not None:
            obj["time"] = time_est.to_json()
        obj["prefix_cache"] = cache.to_json()
        if launch is not None:
            obj["launch"] = launch_json(launch)
        if measured is not None:
            obj["measure"] = {
                "twin": measured.twin,
                "terms": {t: {"estimated": e, "measured": m} for t, e, m in measured.rows},
                "ratios": measured.ratios(),
                "notes": measured.notes,
            }
        print_json(obj)
        return
    print_plan(plan, out, notes)
    if memory is not None:
        print_memory(memory, out)
    if time_est is not None:
        out.print(time_table(time_est))
        for n in time_est.notes:
            out.print(f"[dim]note: {n}[/]")
    print_prefix_cache(cache, out)
    if launch is not None:
        print_launch(launch, out)
    if measured is not None:
        out.print(measure_table(measured.rows))
        out.print(f"[dim]{measured.twin}[/]")
        for n in measured.notes:
            out.print(f"[dim]note: {n}[/]")


@dataclass
class PlanExtras:
    """The memory/time/measure options of `loralab plan`."""

    overrides: Overrides | None = None
    gpu_mem: str | None = None
    measure: bool = False
    tokens: int | None = None
    tflops: float | None = None
    gpu: str | None = None
    mfu: float | None = None
    fmt: str | None = None  # --format: the config file's format (default: told from its keys)
    write_launch: Path | None = None  # --write-launch DIR: launch files for the layout (commands.launch)
    nodes: int = 1
    layout: str | None = None


def plan_extras(
    cfg: ExperimentConfig, plan: Plan, extra: PlanExtras, config: Path, *, counter: TokenCounter | None = None
) -> tuple[MemoryEstimate, TimeEstimate | None, TwinComparison | None]:
    """Memory estimate (with a verdict when a budget is known), time estimate, twin measurement."""
    ov = extra.overrides or Overrides()
    setup, setup_notes = setup_from_config(cfg, plan.arch, ov)
    m = cfg.model
    hf_cfg = resolve_model(m.name_or_path, revision=m.revision, trust_remote_code=m.trust_remote_code).config
    check_max_length(cfg, hf_cfg, setup.seq_len, from_flag=ov.seq_len is not None, warnings=plan.warnings)
    budget = parse_size(extra.gpu_mem) if extra.gpu_mem else None
    if budget is None:
        budget = gpu_table_memory(extra.gpu) or detected_gpu_memory()
    memory = estimate_memory(plan, hf_cfg, setup, budget=budget)
    memory.notes[:0] = setup_notes
    time_est = plan_time(cfg, memory, extra, counter) if memory.modelled else None
    measured = None
    if extra.measure:
        measured = measure_twin(cfg, plan, setup)
    return memory, time_est, measured


def check_max_length(
    cfg: ExperimentConfig, hf_cfg: dict[str, Any], seq_len: int, *, from_flag: bool, warnings: list[str]
) -> None:
    """A sequence length past the model's position table is refused here, not at the first long
    batch hours into `train`; past a rotary model's trained context it is a warning."""
    key = "--seq-len" if from_flag else "data.max_length"
    problem = max_length_problem(hf_cfg, seq_len, file=key if from_flag else str(cfg.source), key=key)
    if problem is not None:
        if not from_flag and cfg.data.max_length is None:
            problem = replace(
                problem, message=f"not set, so {cfg.model.task}'s default applies: " + problem.message
            )
        raise ConfigError([problem])
    warning = max_length_warning(hf_cfg, seq_len, key=key)
    if warning is not None:
        warnings.append(warning)


def gpu_table_memory(name: str | None) -> int | None:
    if not name:
        return None
    spec = GPUS.get(name)
    return int(spec[1] * 2**30) if spec else None


def plan_time(
    cfg: ExperimentConfig, memory: MemoryEstimate, extra: PlanExtras, counter: TokenCounter | None = None
) -> TimeEstimate:
    """Hours for the configured epochs; tokens from --tokens, else from data.train_file. The FLOPs
    come from the replay the memory estimate already ran."""
    epochs = float(cfg.training_args.get("num_train_epochs") or 3.0)  # TrainingArguments' default
    if extra.tokens:
        tokens, source = int(extra.tokens), "--tokens (per epoch)"
    else:
        tokens, source = data_tokens(cfg, memory.setup.seq_len, counter)
    return estimate_time(
        memory.activations,
        memory.setup,
        tokens_per_epoch=tokens,
        tokens_source=source,
        epochs=epochs,
        tflops=extra.tflops,
        gpu=extra.gpu,
        mfu=extra.mfu,
    )


class TokenCounter:
    """Rows and token lengths of the data files, each file read and tokenized once (the time estimate
    and the prefix cache both count the training file), the tokenizer loaded once."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.cfg = cfg
        self._tok: Any = None
        self._tried = False
        self._lengths: dict[tuple[Path, str | None], tuple[int, list[int] | None]] = {}

    def tokenizer(self) -> Any:
        if not self._tried:
            self._tried = True
            try:
                self._tok = load_tokenizer(self.cfg)
            except Exception:  # offline hub id, no tokenizer files: callers fall back to the bound
                self._tok = None
        return self._tok

    def count(self, path: Path, max_len: int, field: str | None = None) -> tuple[int, int | None]:
        """(usable rows, their tokens truncated at max_len); tokens None without a tokenizer, 0 when
        no row has text. `field`: count that column alone (a seq2seq encoder reads only the prompt)."""
        key = (path, field)
        if key not in self._lengths:
            d = self.cfg.data
            rows = read_rows(
                path, text_field=d.text_field, text_template=d.text_template, label_field=d.label_field
            )
            tok = self.tokenizer()
            if field:
                texts = [str(r.fields[field]) for r in rows.rows if isinstance(r.fields.get(field), str)]
            else:  # causal-lm / seq2seq rows have prompt and response fields rather than one rendered text
                texts = rows.texts or [
                    "\n".join(str(v) for v in r.fields.values() if isinstance(v, str)) for r in rows.rows
                ]
            lengths = None
            if tok is not None:
                lengths = [len(i) for i in tok(texts, truncation=False)["input_ids"]] if texts else []
            self._lengths[key] = (len(rows.rows), lengths)
        n, lengths = self._lengths[key]
        return n, None if lengths is None else sum(min(x, max_len) for x in lengths)


def data_tokens(cfg: ExperimentConfig, max_len: int, counter: TokenCounter | None = None) -> tuple[int, str]:
    """Tokens one epoch processes: the training rows (after extract_ratio) tokenized and truncated
    at `max_len` when the tokenizer loads; else rows x max_len, an upper bound. (0, why) without data."""
    d = cfg.data
    if not d.train_file:
        return 0, "unknown: no data.train_file (pass --tokens)"
    path = cfg.resolve_path(d.train_file)
    if not path.is_file():
        return 0, f"unknown: {path} not found (pass --tokens)"
    rows, tokens = (counter or TokenCounter(cfg)).count(path, max_len)
    ratio = float(d.extract_ratio or 1.0)
    n = round(rows * ratio)
    if tokens is None:
        return n * max_len, f"{n:,} rows x {max_len} (upper bound: the tokenizer is not available)"
    if not tokens:
        return 0, f"unknown: no usable rows in {path.name} (pass --tokens)"
    return round(tokens * ratio), f"{n:,} rows of {path.name} tokenized (dynamic padding)"


def plan_prefix_cache(
    cfg: ExperimentConfig, plan: Plan, memory: MemoryEstimate, extra: PlanExtras, counter: TokenCounter
) -> PrefixCacheEstimate:
    """The frozen-prefix cache of the planned run (`prefix_cache`), with the splits it would store."""
    m = cfg.model
    hf_cfg = resolve_model(m.name_or_path, revision=m.revision, trust_remote_code=m.trust_remote_code).config
    setup = memory.setup
    splits, notes = cache_splits(cfg, setup.seq_len, extra.tokens, counter)
    est = estimate_prefix_cache(
        plan,
        hf_cfg,
        setup,
        mode=cfg.prefix_cache,
        neftune_alpha=cfg.training_args.get("neftune_noise_alpha"),
        padding_side=collator_padding_side(cfg, counter),
        splits=splits,
        epochs=float(cfg.training_args.get("num_train_epochs") or 3.0),
        evals_per_epoch=evals_per_epoch(cfg, setup, splits),
    )
    est.notes[:0] = notes
    return est


def collator_padding_side(cfg: ExperimentConfig, counter: TokenCounter) -> str | None:
    """The side `train` pads training batches on: LM collators pad on the right, seq-cls on the
    tokenizer's side (None when the tokenizer does not load)."""
    if cfg.model.task != "seq-cls":
        return "right"
    tok = counter.tokenizer()
    return str(tok.padding_side) if tok is not None else None


def cache_splits(
    cfg: ExperimentConfig, max_len: int, tokens: int | None, counter: TokenCounter
) -> tuple[dict[str, SplitTokens], list[str]]:
    """Rows and tokens of each split the run has (what the cache stores). Training: the training file
    after extract_ratio (--tokens replaces its count); validation: data.validation_file, else the ~10%
    `train` carves from the training rows; test: data.test_file. A seq2seq encoder reads the prompts."""
    d, notes = cfg.data, []
    field = d.prompt_field if cfg.model.task == "seq2seq" else None

    def counted(name: str | None, ratio: float = 1.0) -> SplitTokens | None:
        if not name:
            return None
        path = cfg.resolve_path(name)
        if not path.is_file():
            notes.append(f"{path} not found: its tokens are unknown")
            return SplitTokens(None, None)
        rows, toks = counter.count(path, max_len, field)
        n = round(rows * ratio)
        if toks is None:  # no tokenizer: the same bound as the time estimate
            notes.append(f"{path.name}: rows x {max_len} tokens (upper bound: no tokenizer)")
            return SplitTokens(n, n * max_len)
        return SplitTokens(n, round(toks * ratio))

    train = counted(d.train_file, float(d.extract_ratio or 1.0)) or SplitTokens(None, None)
    if tokens:
        train = SplitTokens(train.rows, int(tokens))
    splits = {"train": train}
    val = counted(d.validation_file)
    if val is None and carves_validation(cfg):
        val = SplitTokens(None, None)
        if train.tokens:  # seq-cls's stratified 10% lands within a row or two of the LM split's
            n_val = lm_validation_rows(train.rows) if train.rows else None
            share = n_val / train.rows if n_val and train.rows else 0.1
            val = SplitTokens(n_val, round(train.tokens * share))
            rest = train.rows - n_val if train.rows and n_val else None
            splits["train"] = SplitTokens(rest, train.tokens - (val.tokens or 0))
            notes.append(f"validation: {share:.0%} of the training rows (and of its tokens)")
    if val is not None:
        splits["validation"] = val
    test = counted(d.test_file)
    if test is not None:
        splits["test"] = test
    return splits, notes


def evals_per_epoch(cfg: ExperimentConfig, setup: TrainSetup, splits: dict[str, SplitTokens]) -> float | None:
    """Validation passes per epoch: 1 for eval_strategy epoch, steps per epoch / eval_steps for steps
    (None when the training rows are unknown), 0 without evaluation or without a validation split."""
    ta = cfg.training_args
    strategy = str(ta.get("eval_strategy", "no"))
    if "validation" not in splits or strategy == "no":
        return 0.0
    if strategy == "epoch":
        return 1.0
    rows, every = splits["train"].rows, ta.get("eval_steps") or ta.get("logging_steps") or 500
    if not rows or float(every) < 1:
        return None
    batch = setup.micro_batch * int(ta.get("gradient_accumulation_steps") or 1) * setup.gpus
    return math.ceil(rows / batch) / float(every)


def module_rows(arch: ArchRecord, show_all: bool) -> list[dict[str, Any]]:
    """Linear-like modules (Linear, Conv1D, Embedding), one row per module or per name pattern."""
    mods: list[ModuleRecord] = [m for m in arch.modules if m.linear or m.is_embedding]
    rows: dict[str, dict[str, Any]] = {}
    for m in mods:
        key = m.name if show_all else f"{name_pattern(m.name)}|{m.in_features}|{m.out_features}"
        row = rows.setdefault(
            key,
            {
                "name": m.name if show_all else name_pattern(m.name),
                "cls": m.cls,
                "kind": m.kind,
                "in_features": m.in_features,
                "out_features": m.out_features,
                "bias": m.has_bias,
                "params": m.own_numel,
                "layers": [],
                "count": 0,
            },
        )
        row["count"] += 1
        if m.layer is not None:
            row["layers"].append(m.layer)
    return list(rows.values())


def run_modules(
    model: str,
    *,
    task: str | None,
    num_labels: int | None,
    show_all: bool,
    as_json: bool,
    trust_remote_code: bool,
    out: Console,
) -> None:
    if task is None:
        task = default_task(resolve_model(model, trust_remote_code=trust_remote_code).config)
    if task not in TASK_TO_TASK_TYPE:
        raise ConfigError(
            [Problem("--task", "", f"unknown task {task!r}", "use one of " + ", ".join(TASK_TO_TASK_TYPE))]
        )
    if task == "seq-cls" and num_labels is None:
        num_labels = 2
    arch = get_arch_record(model, task=task, num_labels=num_labels, trust_remote_code=trust_remote_code)
    alias = resolve_model(model, trust_remote_code=trust_remote_code).note
    rows = module_rows(arch, show_all)
    if as_json:
        obj = {
            "model": arch.model_id,
            "architecture": arch.architecture,
            "num_layers": arch.num_layers,
            "total_params": arch.total_params,
            "modules": rows,
            "notes": [alias] if alias else [],
        }
        print_json(obj)
        return
    t = Table(
        title=f"{arch.model_id}: {arch.architecture}, {arch.num_layers} layers, {arch.total_params:,} params"
    )
    for col in ("module", "class", "kind", "in → out", "bias", "layers", "count"):
        t.add_column(col, justify="right" if col in ("in → out", "count") else "left")
    for r in rows:
        layers = sorted(set(r["layers"]))
        t.add_row(
            r["name"],
            r["cls"],
            r["kind"],
            f"{r['in_features']:,} → {r['out_features']:,}",
            "yes" if r["bias"] else "no",
            f"{layers[0]}-{layers[-1]}" if len(layers) > 1 else (str(layers[0]) if layers else "-"),
            str(r["count"]),
        )
    out.print(t)
    if alias:
        out.print(f"[cyan]note:[/] {alias}")
    out.print(
        "Use the last part of a name (e.g. 'q_proj') or a longer suffix (e.g. 'attn.c_proj') "
        "in target_modules."
    )
