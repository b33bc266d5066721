"""`load_experiment`: read one experiment YAML safely, validate every section, report all problems at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from loralab.config._common import Ctx, check_int, unknown_key
from loralab.config.formats import (
    MODELLESS,
    TOOL_NAMES,
    Converted,
    check_format,
    convert_raw,
    detect_format,
    resolve_auto,
)
from loralab.config.lora import build_lora, raw_lora, task_hint
from loralab.config.models import ExperimentConfig, ModelConfig, Task
from loralab.config.schema import Schemas, load_schemas
from loralab.config.sections import (
    build_data,
    build_experiment,
    build_model,
    build_tracking,
    check_deepspeed,
    check_deepspeed_vs_args,
    load_deepspeed,
)
from loralab.config.training import build_training_args
from loralab.errors import ConfigError, Problem

TOP_LEVEL_KEYS = (
    "experiment",
    "model",
    "lora",
    "lora_defaults",
    "training_args",
    "data",
    "deepspeed",
    "tracking",
    "seed",
    "prefix_cache",
)
PREFIX_CACHE_MODES = ("auto", "on", "off")


def _duplicate_keys(node: yaml.Node, path: str, seen_nodes: set[int]) -> list[tuple[str, int]]:
    """(dotted key, line) of each key given twice in one mapping; YAML loading silently keeps the last."""
    if id(node) in seen_nodes:  # an alias points back at a node already walked
        return []
    seen_nodes.add(id(node))
    found: list[tuple[str, int]] = []
    if isinstance(node, yaml.MappingNode):
        keys: set[str] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            child = f"{path}.{key_node.value}" if path else str(key_node.value)
            if key_node.value in keys:
                found.append((child, key_node.start_mark.line + 1))
            keys.add(key_node.value)
            found.extend(_duplicate_keys(value_node, child, seen_nodes))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found.extend(_duplicate_keys(item, f"{path}[{i}]", seen_nodes))
    return found


def _yaml_problem(file: str, exc: yaml.YAMLError) -> Problem:
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc)
    if isinstance(exc, yaml.constructor.ConstructorError) and "tag" in str(problem):
        return Problem(
            file,
            "",
            f"unsupported YAML tag{where}: {problem}",
            "loralab reads YAML with yaml.safe_load, which never builds Python objects; write plain values",
        )
    context = getattr(exc, "context", None)
    text = f"{context}; {problem}" if context else str(problem)
    return Problem(
        file, "", f"YAML syntax error{where}: {text}", "fix the YAML syntax (indentation, quotes, colons)"
    )


def read_yaml(path: Path) -> dict[str, Any]:
    """The file's top-level mapping; a `ConfigError` if it is missing, unreadable, or not a mapping."""
    file = str(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise ConfigError([Problem(file, "", f"the experiment file {what}", "check the path")])
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            [Problem(file, "", f"cannot read the file: {exc}", "check permissions and encoding")]
        ) from exc
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        duplicates = _duplicate_keys(node, "", set()) if node is not None else []
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_problem(file, exc)]) from exc
    finally:
        loader.dispose()
    problems = [
        Problem(file, key, f"given twice (line {line}); YAML keeps only the last one", "remove one of them")
        for key, line in duplicates
    ]
    if data is None:
        problems.append(Problem(file, "", "the file is empty", "write at least `model: {name_or_path: ...}`"))
    elif not isinstance(data, dict):
        problems.append(
            Problem(file, "", f"the top level must be a mapping of sections, got {type(data).__name__}", "")
        )
    if problems:
        raise ConfigError(problems)
    assert isinstance(data, dict)
    return data


def read_config_file(path: Path) -> dict[str, Any]:
    """The file's top-level mapping: JSON for a .json file (YAML 1.1 would read `3e-5` there as text),
    YAML otherwise; a `ConfigError` if it is missing, unreadable, or not a mapping."""
    if path.suffix.lower() != ".json" or not path.is_file():
        return read_yaml(path)
    file = str(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_no_duplicates(file))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(file, "", f"cannot read the file: {exc}", "check it")]) from exc
    except json.JSONDecodeError as exc:
        message = f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        raise ConfigError([Problem(file, "", message, "fix the JSON")]) from exc
    if not isinstance(data, dict):
        raise ConfigError(
            [Problem(file, "", f"the top level must be a mapping, got {type(data).__name__}", "")]
        )
    return data


def _no_duplicates(file: str) -> Any:
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            problems = [
                Problem(file, k, "given twice; JSON keeps only the last one", "remove one") for k in twice
            ]
            raise ConfigError(problems)
        return dict(pairs)

    return hook


def load_experiment(
    path: str | Path,
    *,
    schemas: Schemas | None = None,
    fmt: str | None = None,
    require_model: bool = True,
) -> ExperimentConfig:
    """Load, validate and normalise one experiment file.

    The file is loralab's experiment YAML or another tool's configuration (loralab.config.formats):
    Axolotl, LLaMA-Factory, DeepSpeed or TrainingArguments, told from its keys unless `fmt` names it;
    it is converted to loralab's form first, with that tool's defaults and a note per key not used.
    A DeepSpeed or TrainingArguments file names no model: refused unless `require_model` is False
    (then `has_model` is False). Raises `ConfigError` listing every problem found. `schemas` overrides
    the field snapshot (tests). Never imports torch, peft or transformers, unless the installed
    peft/transformers differ from the snapshot and none is cached yet (then a subprocess generates one).
    """
    source = Path(path).expanduser().absolute()
    original = read_config_file(source)
    fmt = check_format(fmt, str(path)) if fmt else detect_format(original, str(path))
    schemas = schemas or load_schemas()
    defaults = {name: spec.default for name, spec in schemas.training.items()}
    converted = convert_raw(original, fmt, defaults)
    raw = converted.mapping
    has_model = fmt not in MODELLESS or "model" in raw
    if not has_model and require_model:
        tool = TOOL_NAMES[fmt]
        raise ConfigError(
            [
                Problem(
                    str(path),
                    "",
                    f"a {tool} file names no model, and a model is needed here",
                    f"pass a training config that names the model and refers to this file "
                    f"(e.g. `deepspeed: {source.name}` in it)"
                    if fmt == "deepspeed"
                    else "pass a training config that names the model",
                )
            ]
        )
    ctx = Ctx(file=str(path), base_dir=source.parent)
    for note in schemas.notes:
        ctx.note(note)
    if fmt != "loralab":
        ctx.note(f"read in {TOOL_NAMES[fmt]}'s format and converted to loralab's experiment")
        for note in converted.notes:
            ctx.note(note)
    cfg = _build(raw, schemas, defaults, ctx, has_model)
    if ctx.problems:
        raise ConfigError(_blame(ctx.problems, converted, fmt))
    cfg.source = source
    cfg.notes = list(ctx.notes.items)
    if fmt != "loralab":
        cfg.source_format, cfg.original, cfg.mapped = fmt, original, list(converted.mapped)
    if fmt == "deepspeed" and cfg.deepspeed_file is None:
        cfg.deepspeed_file = source
    return cfg


def _build(
    raw: dict[str, Any], schemas: Schemas, defaults: dict[str, Any], ctx: Ctx, has_model: bool
) -> ExperimentConfig:
    """Every section of loralab's experiment mapping validated into the config (problems in `ctx`)."""
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            unknown_key(ctx, "", str(key), TOP_LEVEL_KEYS, "top-level section", listing=True)

    seed = raw.get("seed")
    if seed is not None and not check_int(ctx, "seed", seed, minimum=0):
        seed = None
    prefix_cache = prefix_cache_mode(raw.get("prefix_cache", "auto"), ctx)
    lora_fields, lora_prefix, enable = raw_lora(raw, ctx)
    model, task_given = _model(raw, task_hint(lora_fields), ctx, has_model)
    lora = build_lora(lora_fields, lora_prefix, enable, schemas.lora, model.task, task_given, ctx)
    training_args, ta_deepspeed = build_training_args(raw.get("training_args"), schemas.training, seed, ctx)
    deepspeed, deepspeed_file = _deepspeed(raw.get("deepspeed"), ta_deepspeed, ctx)
    if deepspeed is not None:
        check_deepspeed(deepspeed, deepspeed_file, ctx)
        check_deepspeed_vs_args(deepspeed, training_args, defaults, ctx)
        _, filled, _ = resolve_auto(deepspeed, training_args, defaults)
        for note in filled:
            ctx.note(
                note.replace(
                    "(from train_batch_size (calculated))",
                    "(processes x micro-batch x accumulation; 1 process here)",
                )
            )
    data = build_data(raw.get("data"), ctx)
    tracking = build_tracking(raw.get("tracking"), ctx)
    experiment = build_experiment(raw.get("experiment"), ctx)
    if model.task == "seq-cls" and model.num_labels is None and not (data.train_file and data.label_field):
        # As transformers' run_classification.py does, the label count comes from the training labels.
        ctx.problem(
            "model.num_labels",
            "model.num_labels is required for seq-cls without data.train_file and data.label_field "
            "(it sizes the classification head)",
            "set it to the number of classes (e.g. num_labels: 260), or data.train_file and data.label_field",
        )
    return ExperimentConfig(
        source=Path(ctx.file),
        model=model,
        lora=lora,
        training_args=training_args,
        data=data,
        deepspeed=deepspeed,
        deepspeed_file=deepspeed_file,
        tracking=tracking,
        experiment=experiment,
        seed=seed,
        prefix_cache=prefix_cache,
        raw=raw,
        has_model=has_model,
    )


def _model(raw: dict[str, Any], hint: Task | None, ctx: Ctx, has_model: bool) -> tuple[ModelConfig, bool]:
    if has_model:
        return build_model(raw.get("model"), hint, ctx)
    return ModelConfig(name_or_path="", task=hint or "causal-lm"), False


# The key each tool names the model by, for "model.name_or_path is required" on a file that lacks it.
_MODEL_KEY = {"axolotl": "base_model", "llamafactory": "model_name_or_path"}


def _blame(problems: list[Problem], converted: Converted, fmt: str) -> list[Problem]:
    """Problems of a converted file named by the key the user wrote: "lora_r (lora.config.r)"."""
    if fmt == "loralab":
        return problems
    ours = {our: their for their, our in converted.mapped if their != our}
    if fmt in _MODEL_KEY:
        ours.setdefault("model.name_or_path", _MODEL_KEY[fmt])
    out = []
    for p in problems:
        match = max((o for o in ours if p.key == o or p.key.startswith(o + ".")), key=len, default=None)
        key = f"{ours[match]}{p.key[len(match) :]} (read as {p.key})" if match else p.key
        out.append(Problem(p.file, key, p.message, p.fix))
    return out


def prefix_cache_mode(value: Any, ctx: Ctx) -> str:
    """`prefix_cache` as one of auto | on | off. YAML 1.1 reads a bare `on` / `off` as true / false,
    so the booleans are taken as the words the user wrote."""
    if value is True or value is False:
        return "on" if value else "off"
    if isinstance(value, str) and value.strip().lower() in PREFIX_CACHE_MODES:
        return value.strip().lower()
    ctx.problem(
        "prefix_cache",
        f"{value!r} is not a prefix cache mode",
        "use auto (cache the frozen lower layers when that is exact), on, or off",
    )
    return "auto"


def _deepspeed(top: Any, from_args: Any, ctx: Ctx) -> tuple[dict[str, Any] | None, Path | None]:
    if top is not None and from_args is not None and top != from_args:
        ctx.problem(
            "training_args.deepspeed",
            "DeepSpeed is configured both at the top level and in training_args, differently",
            "keep only the top-level `deepspeed`",
        )
        return None, None
    if from_args is not None and top is None:
        loaded = load_deepspeed(from_args, "training_args.deepspeed", ctx)
        if loaded[0] is not None:
            ctx.note("training_args.deepspeed: loaded into the top-level deepspeed section")
        return loaded
    return load_deepspeed(top, "deepspeed", ctx)
