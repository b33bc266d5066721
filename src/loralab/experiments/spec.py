"""The study file (`loralab study STUDY.yaml`): a base experiment, named runs of dotted-key overrides,
an optional grid crossed with every run, seeds, baselines scored from predictions made elsewhere,
decision rules and early stopping. Every problem is reported at once, each with its key and a fix,
as the experiment file's own loader does; each run's overrides are checked by loading the base with
them applied, so a typo in an override key is found before anything trains.
"""

from __future__ import annotations

import copy
import itertools
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from loralab.config import load_experiment
from loralab.config._common import (
    Ctx,
    as_mapping,
    check_int,
    check_str,
    is_number,
    join,
    type_name,
    unknown_key,
)
from loralab.config.loader import read_yaml
from loralab.errors import ConfigError, Problem

STUDY_KEYS = ("name", "kind", "base", "seeds", "runs", "grid", "baselines", "rules", "early_stopping")
RUN_KEYS = ("name", "phase", "overrides")
BASELINE_KEYS = ("name", "predictions", "task")
KINDS = ("study", "ablate")
TASKS = ("classification", "generation")
# Seed 000's decision rules (§4.2-§5.3): thresholds as fractions, gains as fractions of weighted F1.
RULE_KEYS = ("target_weighted_f1", "target_tail_f1", "ffn_needed_tail_f1", "adopt_gain", "min_gain", "metric")
EARLY_STOPPING_KEYS = ("patience", "threshold")
# The data keys that hold file paths (relative ones are relative to the file they are written in).
DATA_PATH_KEYS = ("train_file", "validation_file", "test_file")
DEFAULT_SEED = 42
# A run name becomes one folder name: letters, digits and . _ + - only.
_NAME = re.compile(r"^[\w.+-]+$")
_UNSAFE = re.compile(r"[^\w.+-]+")


@dataclass
class RunSpec:
    """One run of the study before seeds: its name (grid suffixes included), phase and overrides
    (the run's own and the grid's, dotted key -> value, paths still as written)."""

    name: str
    phase: str | None
    overrides: dict[str, Any]


@dataclass
class BaselineSpec:
    name: str
    predictions: Path  # absolute
    task: str


@dataclass
class EarlyStopping:
    patience: int
    threshold: float = 0.0


@dataclass
class StudySpec:
    file: Path  # the study file, absolute
    name: str
    kind: str
    base: Path  # the base experiment file, absolute
    base_raw: dict[str, Any]  # the base experiment as read (YAML mapping)
    seeds: list[int]
    runs: list[RunSpec]  # runs crossed with the grid, in order
    baselines: list[BaselineSpec] = field(default_factory=list)
    rules: dict[str, Any] = field(default_factory=dict)
    early_stopping: EarlyStopping | None = None
    raw: dict[str, Any] = field(default_factory=dict)  # the `study:` mapping as written

    @property
    def tracking(self) -> dict[str, Any] | None:
        value = self.base_raw.get("tracking")
        return value if isinstance(value, dict) else None


def safe_part(value: Any) -> str:
    """`value` as part of a folder name (`Qwen/Qwen3-8B` -> `Qwen-Qwen3-8B`, 0.001 -> `0.001`)."""
    return _UNSAFE.sub("-", str(value)).strip("-") or "x"


def set_dotted(target: dict[str, Any], key: str, value: Any) -> str | None:
    """Set `a.b.c` in nested mappings, creating missing ones; a problem text when a part on the way
    is not a mapping (e.g. `model.name_or_path.x`)."""
    parts = key.split(".")
    node = target
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            where = ".".join(parts[: i + 1])
            return f"`{where}` is a {type_name(child)} in the base, not a mapping: `{key}` cannot be set"
        node = child
    node[parts[-1]] = copy.deepcopy(value)
    return None


def _absolute(value: Any, folder: Path) -> Any:
    if not isinstance(value, str) or not value.strip():
        return value
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (folder / p).resolve())


def _local_model(value: Any, folder: Path) -> Any:
    """A model path that names an existing folder or file made absolute (hub ids stay as they are):
    the run's experiment.yaml lives in another folder than the file that named it."""
    if not isinstance(value, str) or Path(value).expanduser().is_absolute():
        return value
    for root in (folder, Path.cwd()):
        if (root / value).exists():
            return str((root / value).resolve())
    return value


def absolutize(raw: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Relative data files, DeepSpeed config and local model paths of an experiment mapping made
    absolute against `folder` (the folder of the file they were written in)."""
    out = copy.deepcopy(raw)
    if isinstance(out.get("model"), str):
        out["model"] = {"name_or_path": out["model"]}  # `model: gpt2` is the short form
    model = out.get("model")
    if isinstance(model, dict) and "name_or_path" in model:
        model["name_or_path"] = _local_model(model["name_or_path"], folder)
    data = out.get("data")
    if isinstance(data, dict):
        for key in DATA_PATH_KEYS:
            if key in data:
                data[key] = _absolute(data[key], folder)
    if isinstance(out.get("deepspeed"), str):
        out["deepspeed"] = _absolute(out["deepspeed"], folder)
    args = out.get("training_args")
    if isinstance(args, dict) and isinstance(args.get("deepspeed"), str):
        args["deepspeed"] = _absolute(args["deepspeed"], folder)
    return out


def override_paths(overrides: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Overrides with path values made absolute against the study file's folder (where they are
    written); the same rules as `absolutize`."""
    out = dict(overrides)
    for key, value in overrides.items():
        if key in {f"data.{k}" for k in DATA_PATH_KEYS} or key in ("deepspeed", "training_args.deepspeed"):
            out[key] = _absolute(value, folder)
        elif key in ("model.name_or_path", "model"):
            out[key] = _local_model(value, folder)
    return out


def apply_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The base with every dotted override set, and one problem text per override that cannot be."""
    out = copy.deepcopy(base)
    if isinstance(out.get("model"), str):
        out["model"] = {"name_or_path": out["model"]}
    problems = []
    for key, value in overrides.items():
        problem = set_dotted(out, key, value)
        if problem:
            problems.append(problem)
    return out, problems


def resolve_run(spec: StudySpec, run: RunSpec, seed: int) -> tuple[dict[str, Any], list[str]]:
    """The experiment one run of one seed trains (what its experiment.yaml holds), and the overrides
    that could not be applied: the base with paths made absolute, the overrides set, the seed, the
    run's name and phase, and the study's early stopping the way `train` reads it."""
    base = absolutize(spec.base_raw, spec.base.parent)
    raw, problems = apply_overrides(base, override_paths(run.overrides, spec.file.parent))
    args = raw.get("training_args")
    args = raw["training_args"] = dict(args) if isinstance(args, dict) else {}
    args["seed"] = seed
    raw.pop("seed", None)  # the top-level seed would otherwise disagree with training_args.seed
    experiment = raw.get("experiment")
    experiment = raw["experiment"] = dict(experiment) if isinstance(experiment, dict) else {}
    experiment["name"] = f"{spec.name}-{run.name}-s{seed}"
    if run.phase is not None:
        experiment["phase"] = run.phase
    if spec.early_stopping is not None:
        _early_stopping_args(raw, spec)
    return raw, problems


def _early_stopping_args(raw: dict[str, Any], spec: StudySpec) -> None:
    """train adds transformers' EarlyStoppingCallback when `experiment.early_stopping_patience` is set
    and `load_best_model_at_end` is on; the callback compares `metric_for_best_model` at each
    evaluation, which needs checkpoints saved on the same schedule as evaluations."""
    assert spec.early_stopping is not None
    es = spec.early_stopping
    raw["experiment"]["early_stopping_patience"] = es.patience
    # Recorded for the run's config; train's callback (session.py) reads only the patience today.
    raw["experiment"]["early_stopping_threshold"] = es.threshold
    args = raw["training_args"]
    args["load_best_model_at_end"] = True
    strategy = args.get("eval_strategy") or args.get("evaluation_strategy")
    if strategy in (None, "no"):
        strategy = args["eval_strategy"] = "epoch"
        args.pop("evaluation_strategy", None)
    args["save_strategy"] = strategy
    if strategy == "steps":
        # transformers evaluates every eval_steps (default: logging_steps) and needs saves on those steps
        args["save_steps"] = (
            args.get("eval_steps") or args.get("logging_steps") or args.get("save_steps", 500)
        )
    if "metric_for_best_model" not in args:
        if _classifies(raw):
            args["metric_for_best_model"] = spec.rules.get("metric", "weighted_f1")
            args["greater_is_better"] = True
        else:
            args["metric_for_best_model"] = "loss"
            args["greater_is_better"] = False


def _classifies(raw: dict[str, Any]) -> bool:
    model, lora = raw.get("model"), raw.get("lora")
    task = model.get("task") if isinstance(model, dict) else None
    lora_cfg = lora.get("config") if isinstance(lora, dict) else None
    task_type = lora_cfg.get("task_type") if isinstance(lora_cfg, dict) else None
    return task == "seq-cls" or (task is None and task_type == "SEQ_CLS")


# ---- reading the study file ----------------------------------------------------------------------


def load_study_file(path: str | Path) -> StudySpec:
    """Read, validate and expand (runs x grid) a study file; `ConfigError` with every problem."""
    source = Path(path).expanduser().absolute()
    raw = read_yaml(source)
    ctx = Ctx(file=str(path), base_dir=source.parent)
    for key in raw:
        if key != "study":
            unknown_key(ctx, "", str(key), ("study",), "top-level section", listing=True)
    study = as_mapping(ctx, "study", raw.get("study"), "study: {base: base.yaml, runs: [...]}")
    if study is None or "study" not in raw:
        if "study" not in raw:
            ctx.problem(
                "study", "the `study` section is missing", "write `study: {base: base.yaml, runs: [...]}`"
            )
        raise ConfigError(ctx.problems)
    for key in study:
        if key not in STUDY_KEYS:
            unknown_key(ctx, "study", str(key), STUDY_KEYS, "study key", listing=True)
    name = study.get("name", source.stem)
    if check_str(ctx, "study.name", name) and not _NAME.match(str(name)):
        ctx.problem("study.name", f"{name!r} cannot be a folder name", f"use e.g. {safe_part(name)!r}")
    kind = study.get("kind", "study")
    if kind not in KINDS:
        ctx.problem("study.kind", f"unknown kind {kind!r}", f"use one of: {', '.join(KINDS)}")
    base_path, base_raw = _base(ctx, study.get("base"))
    spec = StudySpec(
        file=source.resolve(),
        name=str(name),
        kind=str(kind),
        base=base_path or source,
        base_raw=base_raw or {},
        seeds=_seeds(ctx, study.get("seeds"), base_raw or {}),
        runs=_runs(ctx, study.get("runs"), _grid(ctx, study.get("grid"))),
        baselines=_baselines(ctx, study.get("baselines")),
        rules=_rules(ctx, study.get("rules")),
        early_stopping=_early_stopping(ctx, study.get("early_stopping")),
        raw=study,
    )
    names = {r.name for r in spec.runs}
    for i, b in enumerate(spec.baselines):
        if b.name in names:
            ctx.problem(
                f"study.baselines[{i}].name", f"{b.name!r} is also a run's name", "give it another name"
            )
    if base_raw is not None:  # the overrides too, whatever else is wrong: every problem at once
        _check_runs_load(ctx, spec)
    if ctx.problems:
        raise ConfigError(ctx.problems)
    return spec


def _base(ctx: Ctx, value: Any) -> tuple[Path | None, dict[str, Any] | None]:
    if value is None:
        ctx.problem(
            "study.base", "the base experiment is missing", "write `base: base.yaml` (relative to this file)"
        )
        return None, None
    if not check_str(ctx, "study.base", value):
        return None, None
    path = Path(str(value)).expanduser()
    path = path if path.is_absolute() else (ctx.base_dir / path)
    if not path.is_file():
        ctx.problem(
            "study.base",
            f"base experiment {value!r} not found (looked at {path})",
            "paths are relative to the study file's folder",
        )
        return None, None
    try:
        load_experiment(path)
    except ConfigError as e:
        ctx.problems.extend(e.problems)  # the base's own problems, named by its own file
        return None, None
    return path.resolve(), read_yaml(path)


def _seeds(ctx: Ctx, value: Any, base_raw: dict[str, Any]) -> list[int]:
    if value is None:
        args = base_raw.get("training_args")
        seed = (args.get("seed") if isinstance(args, dict) else None) or base_raw.get("seed")
        return [seed if isinstance(seed, int) and not isinstance(seed, bool) else DEFAULT_SEED]
    items = value if isinstance(value, list) else [value]
    if not items:
        ctx.problem("study.seeds", "the list is empty", "give at least one seed, e.g. [42]")
    ok = [s for i, s in enumerate(items) if check_int(ctx, f"study.seeds[{i}]", s, minimum=0)]
    if len(set(ok)) != len(ok):
        ctx.problem("study.seeds", f"a seed is given twice: {ok}", "list each seed once")
    return ok


def _grid(ctx: Ctx, value: Any) -> dict[str, list[Any]]:
    grid = as_mapping(ctx, "study.grid", value, "grid: {lora.config.r: [8, 16]}") or {}
    out: dict[str, list[Any]] = {}
    for key, values in grid.items():
        path = join("study.grid", str(key))
        if not isinstance(values, list) or not values:
            ctx.problem(
                path,
                f"expected a non-empty list of values, got {type_name(values)} {values!r}",
                f"write `{key}: [a, b]`",
            )
            continue
        out[str(key)] = values
    return out


def _runs(ctx: Ctx, value: Any, grid: dict[str, list[Any]]) -> list[RunSpec]:
    if value is None:
        value = [{"name": "base"}]  # a seeds-only (or grid-only) study of the base itself
    if not isinstance(value, list) or not value:
        ctx.problem(
            "study.runs",
            f"expected a non-empty list of runs, got {type_name(value)}",
            "write `runs: [{name: a, overrides: {...}}]`",
        )
        return []
    runs: list[RunSpec] = []
    for i, item in enumerate(value):
        prefix = f"study.runs[{i}]"
        run = as_mapping(ctx, prefix, item, "- {name: attention, overrides: {lora.config.r: 8}}")
        if run is None:
            continue
        for key in run:
            if key not in RUN_KEYS:
                unknown_key(ctx, prefix, str(key), RUN_KEYS, "run key", listing=True)
        name, phase = run.get("name"), run.get("phase")
        if not check_str(ctx, f"{prefix}.name", name):
            continue
        if not _NAME.match(str(name)):
            ctx.problem(
                f"{prefix}.name", f"{name!r} cannot be a folder name", f"use e.g. {safe_part(name)!r}"
            )
            continue
        if phase is not None and not check_str(ctx, f"{prefix}.phase", phase):
            phase = None
        overrides = (
            as_mapping(ctx, f"{prefix}.overrides", run.get("overrides"), "overrides: {lora.config.r: 8}")
            or {}
        )
        for key in overrides:
            if not isinstance(key, str) or not all(key.split(".")):
                ctx.problem(
                    f"{prefix}.overrides", f"{key!r} is not a dotted key", "write keys like lora.config.r"
                )
            elif key in grid:
                ctx.problem(
                    join(f"{prefix}.overrides", key),
                    f"run {name!r} sets `{key}`, which the grid also sets",
                    "set it in one place",
                )
        runs.extend(_cross(str(name), phase, dict(overrides), grid))
    seen: set[str] = set()
    for r in runs:
        if r.name in seen:
            ctx.problem("study.runs", f"two runs are named {r.name!r}", "give each run its own name")
        seen.add(r.name)
    return runs


def _cross(
    name: str, phase: str | None, overrides: dict[str, Any], grid: dict[str, list[Any]]
) -> list[RunSpec]:
    if not grid:
        return [RunSpec(name, phase, overrides)]
    out = []
    for combo in itertools.product(*grid.values()):
        suffix = "".join(
            f"-{safe_part(k.split('.')[-1])}{safe_part(v)}" for k, v in zip(grid, combo, strict=True)
        )
        out.append(RunSpec(name + suffix, phase, {**overrides, **dict(zip(grid, combo, strict=True))}))
    return out


def _baselines(ctx: Ctx, value: Any) -> list[BaselineSpec]:
    if value is None:
        return []
    if not isinstance(value, list):
        ctx.problem(
            "study.baselines",
            f"expected a list, got {type_name(value)}",
            "write `baselines: [{name: api, predictions: api.csv, task: generation}]`",
        )
        return []
    out = []
    for i, item in enumerate(value):
        prefix = f"study.baselines[{i}]"
        b = as_mapping(ctx, prefix, item, "- {name: api, predictions: api.csv, task: generation}")
        if b is None:
            continue
        for key in b:
            if key not in BASELINE_KEYS:
                unknown_key(ctx, prefix, str(key), BASELINE_KEYS, "baseline key", listing=True)
        task = b.get("task", "classification")
        if task not in TASKS:
            ctx.problem(f"{prefix}.task", f"unknown task {task!r}", f"use one of: {', '.join(TASKS)}")
        ok = check_str(ctx, f"{prefix}.name", b.get("name")) & check_str(
            ctx, f"{prefix}.predictions", b.get("predictions")
        )
        if not ok:
            continue
        path = Path(str(b["predictions"])).expanduser()
        path = path if path.is_absolute() else (ctx.base_dir / path).resolve()
        if not path.is_file():
            ctx.problem(
                f"{prefix}.predictions",
                f"predictions file {b['predictions']!r} not found (looked at {path})",
                "paths are relative to the study file's folder",
            )
        out.append(BaselineSpec(str(b["name"]), path, str(task)))
    if len({b.name for b in out}) != len(out):
        ctx.problem("study.baselines", "two baselines have the same name", "give each its own name")
    return out


def _rules(ctx: Ctx, value: Any) -> dict[str, Any]:
    rules = as_mapping(ctx, "study.rules", value, "rules: {target_weighted_f1: 0.85}") or {}
    out: dict[str, Any] = {}
    for key, item in rules.items():
        path = join("study.rules", str(key))
        if key not in RULE_KEYS:
            unknown_key(ctx, "study.rules", str(key), RULE_KEYS, "rule", listing=True)
        elif key == "metric":
            if check_str(ctx, path, item):
                out[key] = item
        elif not is_number(item) or not 0 <= item <= 1:
            ctx.problem(
                path,
                f"expected a number from 0 to 1, got {type_name(item)} {item!r}",
                "write a fraction, e.g. 0.02 for 2 points",
            )
        else:
            out[str(key)] = float(item)
    return out


def _early_stopping(ctx: Ctx, value: Any) -> EarlyStopping | None:
    if value is None:
        return None
    es = as_mapping(ctx, "study.early_stopping", value, "early_stopping: {patience: 5, threshold: 0.005}")
    if es is None:
        return None
    for key in es:
        if key not in EARLY_STOPPING_KEYS:
            unknown_key(
                ctx, "study.early_stopping", str(key), EARLY_STOPPING_KEYS, "early stopping key", listing=True
            )
    patience, threshold = es.get("patience"), es.get("threshold", 0.0)
    ok = check_int(ctx, "study.early_stopping.patience", patience, minimum=1)
    if not is_number(threshold) or threshold < 0:
        ctx.problem(
            "study.early_stopping.threshold",
            f"expected a number >= 0, got {threshold!r}",
            "e.g. 0.005 for half a point",
        )
        ok = False
    return EarlyStopping(int(patience or 0), float(threshold)) if ok else None


def _check_runs_load(ctx: Ctx, spec: StudySpec) -> None:
    """Apply each run's overrides to the base and load the result as `loralab train` will; every
    problem is named by the run and the override key (or the base key) it comes from."""
    with tempfile.TemporaryDirectory(prefix="loralab-study-") as tmp:
        for i, run in enumerate(spec.runs):
            raw, problems = resolve_run(spec, run, spec.seeds[0] if spec.seeds else DEFAULT_SEED)
            for text in problems:
                ctx.problem(f"run {run.name}", text, "override a key inside a mapping")
            if problems:
                continue
            path = Path(tmp) / f"{i}.yaml"
            path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
            try:
                load_experiment(path)
            except ConfigError as e:
                ctx.problems.extend(_blame(spec, run, p) for p in e.problems)


def _blame(spec: StudySpec, run: RunSpec, p: Problem) -> Problem:
    owner = next(
        (k for k in run.overrides if p.key == k or p.key.startswith(k + ".") or k.startswith(p.key + ".")),
        None,
    )
    where = f"overrides.{owner}" if owner else f"{p.key} (from the base {spec.base.name})"
    key = f"run {run.name}: {where}" if p.key else f"run {run.name}"
    return Problem(str(spec.file), key, p.message, p.fix)
