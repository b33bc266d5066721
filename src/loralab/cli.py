"""The `loralab` command: a thin layer over the stage packages; every error goes through cli_errors."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from loralab import __version__
from loralab.cli_errors import format_error, reading
from loralab.commands.diff import run_diff
from loralab.commands.plan import PlanExtras, run_modules, run_plan
from loralab.commands.recommend import DataOptions, LaunchRequest, parse_duration, run_recommend
from loralab.commands.ui import serve_ui
from loralab.config.formats.convert import convert_file
from loralab.errors import Problem, UsageError
from loralab.evaluate.predictions_file import score_predictions
from loralab.evaluate.render import print_metrics
from loralab.io import print_json
from loralab.plan.estimate.setup import Overrides
from loralab.predict.files import check_run_files
from loralab.train.launch import launch_distributed, plan_launch

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="loralab: plan, train, evaluate and compare LoRA fine-tuning experiments.",
    pretty_exceptions_enable=False,
)
_state = {"debug": False}
# Piped output (CI logs, files) gets a wide table instead of rich's 80-column default.
out = Console(width=None if sys.stdout.isatty() else 140)

Task = Annotated[
    str | None,
    typer.Option("--task", "-t", help="seq-cls | causal-lm | seq2seq (default: from the model's config)"),
]


def _print_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"loralab {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print loralab's version."),
    ] = False,
) -> None:
    _state["debug"] = debug


# (lowest, highest or None, whether the lowest itself is allowed)
Range = tuple[float, float | None, bool]
COUNT: Range = (1, None, True)
# --write-launch's options, the same on plan and recommend
NodesOption = Annotated[
    int, typer.Option("--nodes", help="Machines, with --write-launch (--gpus is per machine).")
]
LAYOUTS_HELP = "ddp | zero2 | zero2-offload | zero3 | zero3-offload | fsdp"
FORMAT_HELP = (
    "Format of the config: loralab | axolotl | llamafactory | deepspeed | training_args "
    "(default: told from its keys)."
)
# --format, the same on every command that reads a config
FormatOption = Annotated[str | None, typer.Option("--format", help=FORMAT_HELP)]
POSITIVE: Range = (0, None, False)
FRACTION: Range = (0, 1, False)


def _allowed(r: Range) -> str:
    low, high, inclusive = r
    if high is None:
        return f"{low:g} or more" if inclusive else f"more than {low:g}"
    return f"{low:g} to {high:g}" if inclusive else f"more than {low:g} and at most {high:g}"


def _check_launcher(launcher: str, accelerate_config: Path | None) -> None:
    if launcher not in ("torchrun", "accelerate"):
        raise UsageError(
            Problem("--launcher", "", f"unknown launcher {launcher!r}", "use torchrun or accelerate")
        )
    if accelerate_config is not None and launcher != "accelerate":
        raise UsageError(
            Problem("--accelerate-config", "", "is read by accelerate only", "add --launcher accelerate")
        )


def _check_ranges(*checks: tuple[str, float | None, Range]) -> None:
    """Every numeric option given outside its range, reported at once. Typer's own min/max would print
    a usage box without a fix, and a 0 or a negative otherwise flows into the estimates (a
    "ZeRO-7" plan, a negative TFLOP/s, a division by zero GPUs)."""
    problems = []
    for flag, value, (low, high, inclusive) in checks:
        if value is None:
            continue
        if (value >= low if inclusive else value > low) and (high is None or value <= high):
            continue
        problems.append(
            Problem(flag, "", f"{value:g} is out of range", f"give {_allowed((low, high, inclusive))}")
        )
    if problems:
        raise UsageError(problems)


def _run(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except (typer.Exit, SystemExit):
        raise
    except BaseException as exc:
        if _state["debug"]:
            raise
        msg, code = format_error(exc)
        # Plain write: a message must stay one line per problem, never wrapped by the console.
        sys.stderr.write(msg + "\n")
        raise typer.Exit(code) from None


@app.command()
def plan(
    config: Annotated[Path, typer.Argument(help="Experiment YAML file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
    no_options: Annotated[bool, typer.Option("--no-options", help="Skip the option table.")] = False,
    gpu_mem: Annotated[
        str | None,
        typer.Option("--gpu-mem", help="Memory budget per GPU, e.g. 80GiB (default: detected GPU)."),
    ] = None,
    gpus: Annotated[int | None, typer.Option("--gpus", help="Number of GPUs (data parallel).")] = None,
    zero_stage: Annotated[
        int | None, typer.Option("--zero-stage", help="DeepSpeed ZeRO stage 0-3 (default: the config's).")
    ] = None,
    offload: Annotated[
        bool | None, typer.Option("--offload/--no-offload", help="ZeRO optimizer offload to CPU.")
    ] = None,
    micro_batch: Annotated[int | None, typer.Option("--micro-batch", help="Per-device batch size.")] = None,
    seq_len: Annotated[int | None, typer.Option("--seq-len", help="Tokens per sequence.")] = None,
    gradient_checkpointing: Annotated[
        bool | None, typer.Option("--gradient-checkpointing/--no-gradient-checkpointing")
    ] = None,
    attn_implementation: Annotated[
        str | None, typer.Option("--attn-implementation", help="eager | sdpa | flash_attention_2")
    ] = None,
    measure: Annotated[
        bool, typer.Option("--measure", help="Run one step of a shrunken twin and compare term by term.")
    ] = False,
    tokens: Annotated[int | None, typer.Option("--tokens", help="Training tokens per epoch.")] = None,
    tflops: Annotated[float | None, typer.Option("--tflops", help="Sustained TFLOP/s per GPU.")] = None,
    gpu: Annotated[str | None, typer.Option("--gpu", help="GPU model from the table, e.g. H100-SXM.")] = None,
    mfu: Annotated[float | None, typer.Option("--mfu", help="Model FLOPs utilisation for --gpu.")] = None,
    fmt: FormatOption = None,
    write_launch: Annotated[
        Path | None,
        typer.Option(
            "--write-launch",
            help="Write the launch files of the layout (DeepSpeed JSON or accelerate FSDP config, "
            "torchrun/accelerate and Slurm scripts) into DIR.",
        ),
    ] = None,
    nodes: NodesOption = 1,
    layout: Annotated[
        str | None, typer.Option("--layout", help=f"{LAYOUTS_HELP} (default: from the config).")
    ] = None,
) -> None:
    """Exact LoRA trainable parameters, matched modules, options, memory per device and time for CONFIG,
    without loading weights."""

    def go() -> None:
        _check_ranges(
            ("--gpus", gpus, COUNT),
            ("--zero-stage", zero_stage, (0, 3, True)),
            ("--micro-batch", micro_batch, COUNT),
            ("--seq-len", seq_len, COUNT),
            ("--tokens", tokens, COUNT),
            ("--tflops", tflops, POSITIVE),
            ("--mfu", mfu, FRACTION),
            ("--nodes", nodes, COUNT),
        )
        ov = Overrides(
            micro_batch=micro_batch,
            seq_len=seq_len,
            gradient_checkpointing=gradient_checkpointing,
            attn_implementation=attn_implementation,
            gpus=gpus,
            zero_stage=zero_stage,
            offload=offload,
        )
        extra = PlanExtras(
            overrides=ov,
            gpu_mem=gpu_mem,
            measure=measure,
            tokens=tokens,
            tflops=tflops,
            gpu=gpu,
            mfu=mfu,
            fmt=fmt,
            write_launch=write_launch,
            nodes=nodes,
            layout=layout,
        )
        run_plan(config, as_json=as_json, with_options=not no_options, out=out, extra=extra)

    _run(go)


@app.command("diff")
def diff_cmd(
    a: Annotated[
        Path, typer.Argument(help="First config (loralab, Axolotl, LLaMA-Factory, DeepSpeed, ...).")
    ],
    b: Annotated[Path, typer.Argument(help="Second config.")],
    gpus: Annotated[
        int | None,
        typer.Option(
            "--gpus",
            help="Data-parallel processes of both runs (default: DeepSpeed train_batch_size, else 1).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
    markdown: Annotated[
        Path | None, typer.Option("--markdown", help="Also write a Markdown report to FILE.")
    ] = None,
) -> None:
    """Compare two training configs by meaning: each difference with its impact, derived quantities
    (effective batch, schedule, LoRA scale, parameters, memory) side by side."""

    def go() -> None:
        _check_ranges(("--gpus", gpus, COUNT))
        run_diff(a, b, gpus=gpus, as_json=as_json, markdown=markdown, console=out)

    _run(go)


@app.command()
def convert(
    config: Annotated[
        Path, typer.Argument(help="Axolotl, LLaMA-Factory, DeepSpeed or TrainingArguments file.")
    ],
    to: Annotated[str, typer.Option("--to", help="Target format (loralab).")] = "loralab",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the YAML here (default: stdout).")
    ] = None,
    fmt: FormatOption = None,
) -> None:
    """Convert another tool's config into a loralab experiment YAML, one comment per mapped key."""

    def go() -> None:
        if to.strip().lower() != "loralab":
            raise UsageError(Problem("--to", "", f"cannot convert to {to!r}", "use --to loralab"))
        text = convert_file(config, fmt, output.parent if output is not None else None)
        if output is None:
            sys.stdout.write(text)
            return
        output.write_text(text, encoding="utf-8")
        out.print(f"wrote {escape(str(output))}")

    _run(go)


@app.command()
def recommend(
    model: Annotated[str, typer.Argument(help="Hub id, local folder with config.json, or bundled model.")],
    gpu_mem: Annotated[
        str | None,
        typer.Option("--gpu-mem", help="Memory per GPU, e.g. 24GiB. Default: this host's GPU, else its CPU."),
    ] = None,
    task: Task = None,
    num_labels: Annotated[
        int | None, typer.Option(help="Labels for seq-cls (default: counted in --data).")
    ] = None,
    rows: Annotated[int | None, typer.Option("--rows", help="Training-set size in rows.")] = None,
    data: Annotated[
        str | None, typer.Option("--data", help="Training file: rows, fields and labels are read from it.")
    ] = None,
    text_field: Annotated[
        str | None, typer.Option("--text-field", help="Column of --data with the text.")
    ] = None,
    label_field: Annotated[str | None, typer.Option("--label-field", help="Column with the label.")] = None,
    prompt_field: Annotated[
        str | None, typer.Option("--prompt-field", help="Column with the prompt.")
    ] = None,
    response_field: Annotated[
        str | None, typer.Option("--response-field", help="Column with the response.")
    ] = None,
    gpus: Annotated[int, typer.Option("--gpus", help="Number of GPUs.")] = 1,
    cpu: Annotated[bool, typer.Option("--cpu", help="Recommend for this host's CPU and RAM.")] = False,
    seq_len: Annotated[int, typer.Option("--seq-len", help="Tokens per sequence.")] = 512,
    epochs: Annotated[
        int | None, typer.Option("--epochs", help="Epochs (default: 3, more for small data).")
    ] = None,
    bf16: Annotated[bool, typer.Option("--bf16/--fp16", help="GPU supports bf16 (Ampere or newer).")] = True,
    validate: Annotated[
        bool, typer.Option("--validate", help="Check the learning rate (and rank) by a short study.")
    ] = False,
    budget: Annotated[
        str, typer.Option("--budget", help="Wall-clock budget of --validate, e.g. 15m.")
    ] = "15m",
    out_path: Annotated[
        str | None, typer.Option("--out", "-o", help="Write the config as YAML here.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    write_launch: Annotated[
        Path | None,
        typer.Option(
            "--write-launch",
            help="Also write the recommendation's launch files (as `plan --write-launch`) into DIR.",
        ),
    ] = None,
    nodes: NodesOption = 1,
    layout: Annotated[str | None, typer.Option("--layout", help=f"{LAYOUTS_HELP} (default: ddp).")] = None,
) -> None:
    """Rank, alpha, targets, layers, batch, learning rate, steps, precision and checkpointing that fit."""

    def go() -> None:
        _check_ranges(
            ("--gpus", gpus, COUNT),
            ("--num-labels", num_labels, COUNT),
            ("--rows", rows, COUNT),
            ("--seq-len", seq_len, COUNT),
            ("--epochs", epochs, COUNT),
            ("--nodes", nodes, COUNT),
        )
        launch = LaunchRequest(write_launch, nodes, layout) if write_launch is not None else None
        run_recommend(
            model,
            task=task,
            num_labels=num_labels,
            rows=rows,
            data=DataOptions(data, text_field, label_field, prompt_field, response_field) if data else None,
            gpu_mem=gpu_mem,
            gpus=gpus,
            seq_len=seq_len,
            bf16=bf16,
            out_path=out_path,
            as_json=as_json,
            console=out,
            cpu=cpu,
            epochs=epochs,
            validate=_validator(parse_duration(budget), out_path, as_json) if validate else None,
            launch=launch,
        )

    _run(go)


def _validator(budget_s: float, out_path: str | None, quiet: bool) -> Any:
    # the study runner behind --validate loads torch, transformers and matplotlib: only --validate pays
    from loralab.commands.recommend_validate import validator

    return validator(budget_s, out_path, out, quiet=quiet)


@app.command()
def modules(
    model: Annotated[str, typer.Argument(help="Hub id, local folder with config.json, or bundled model.")],
    task: Task = None,
    num_labels: Annotated[int | None, typer.Option(help="Labels for seq-cls.")] = None,
    show_all: Annotated[bool, typer.Option("--all", help="One row per module instead of per kind.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    trust_remote_code: Annotated[bool, typer.Option(help="Allow the model's own code.")] = False,
) -> None:
    """The linear-like modules of MODEL (names, shapes, kinds) to choose target_modules from."""

    def go() -> None:
        _check_ranges(("--num-labels", num_labels, COUNT))
        run_modules(
            model,
            task=task,
            num_labels=num_labels,
            show_all=show_all,
            as_json=as_json,
            trust_remote_code=trust_remote_code,
            out=out,
        )

    _run(go)


@app.command("train")
def train_cmd(
    config: Annotated[Path, typer.Argument(help="Experiment YAML file.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Run directory (default: runs/...).")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --output from its last checkpoint.")
    ] = False,
    check: Annotated[bool, typer.Option("--check", help="Run the preflight checks only.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar (CI logs).")] = False,
    num_processes: Annotated[
        int | None,
        typer.Option(
            "--num-processes",
            "-n",
            help="Data-parallel processes per machine (default 1, or the accelerate config's).",
        ),
    ] = None,
    prefix_cache: Annotated[
        str | None,
        typer.Option(
            "--prefix-cache",
            help="auto | on | off: compute the frozen layers below the adapters once (overrides the config).",
        ),
    ] = None,
    prefix_cache_dir: Annotated[
        Path | None,
        typer.Option(
            "--prefix-cache-dir", help="Folder for the prefix cache (default: RUN_DIR/prefix_cache)."
        ),
    ] = None,
    fmt: FormatOption = None,
    nnodes: Annotated[
        int | None,
        typer.Option("--nnodes", help="Machines in the run (torchrun agents; default: Slurm's, else 1)."),
    ] = None,
    node_rank: Annotated[
        int | None, typer.Option("--node-rank", help="This machine's rank, 0 to nnodes-1 (default: Slurm's).")
    ] = None,
    master_addr: Annotated[
        str | None, typer.Option("--master-addr", help="Address of node 0 (default: Slurm's first host).")
    ] = None,
    master_port: Annotated[
        int | None, typer.Option("--master-port", help="Port on node 0 (default: 29500 across nodes).")
    ] = None,
    launcher: Annotated[
        str,
        typer.Option(
            "--launcher", help="torchrun | accelerate: what starts the processes of a distributed run."
        ),
    ] = "torchrun",
    accelerate_config: Annotated[
        Path | None,
        typer.Option(
            "--accelerate-config",
            help="accelerate's config file for --launcher accelerate (DDP, DeepSpeed or FSDP settings).",
        ),
    ] = None,
) -> None:
    """Fine-tune with LoRA: preflight checks, then training, evaluation and the run record."""

    def go() -> None:
        _check_ranges(
            ("--num-processes/-n", num_processes, COUNT),
            ("--nnodes", nnodes, COUNT),
            ("--node-rank", node_rank, (0, None, True)),
            ("--master-port", master_port, (1, 65535, True)),
        )
        _check_launcher(launcher, accelerate_config)
        cache: dict[str, Any] = {
            "prefix_cache": prefix_cache,
            "prefix_cache_dir": prefix_cache_dir,
            "fmt": fmt,
        }
        spread = (num_processes, nnodes, node_rank, master_addr, master_port)
        # --check: the checks run once, in this process
        launch = None if check else plan_launch(launcher, accelerate_config, *spread)
        if launch is not None:
            code = launch_distributed(
                config, output=output, resume=resume, quiet=quiet, launch=launch, **cache
            )
            if code:
                raise typer.Exit(code)
            return

        # A launcher process never imports train.run; training in this process pays for its imports:
        # torch, transformers and peft (seconds)
        from loralab.train.run import train

        result = train(config, output=output, resume=resume, quiet=quiet, check_only=check, **cache)
        if result is not None:
            m = result.metrics
            shown = {k: m[k] for k in ("accuracy", "weighted_f1", "macro_f1", "loss", "perplexity") if k in m}
            out.print(f"run: {result.run_dir}  " + "  ".join(f"{k} {v:.4f}" for k, v in shown.items()))
            for n in result.notes:
                out.print(f"[cyan]note:[/] {escape(n)}")  # a note may quote [brackets]

    _run(go)


@app.command()
def demo(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Run directory.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """The whole loop on MiniLM-L6 and Banking77 on CPU: train, evaluate, summary table."""

    def go() -> None:
        from loralab.demo import run_demo  # imports train (torch), see train_cmd

        run_demo(output, quiet=quiet)

    _run(go)


def _evaluate_mode(
    run_dir: Path | None, predictions: Path | None, *, run_only: dict[str, Any], file_only: dict[str, Any]
) -> None:
    """`evaluate` scores a run or a predictions file, never both; an option of the other mode would be
    silently ignored, so it is an error instead."""
    if run_dir is None and predictions is None:
        fix = "`loralab evaluate runs/NAME` or `loralab evaluate --predictions preds.csv`"
        raise UsageError(Problem("evaluate", "", "needs a RUN_DIR or --predictions FILE", fix))
    if run_dir is not None and predictions is not None:
        what = "a RUN_DIR and --predictions were both given; evaluate scores one"
        fix = "drop RUN_DIR to score the file, or --predictions to reload the run's adapter"
        raise UsageError(Problem(str(run_dir), "", what, fix))
    mode, stray = ("--predictions", run_only) if predictions is not None else ("a RUN_DIR", file_only)
    problems = [
        Problem(flag, "", f"does not apply when scoring {mode}", "drop it")
        for flag, value in stray.items()
        if value is not None
    ]
    if run_only.get("--data") is not None and run_only.get("--split") is not None:
        problems.append(
            Problem("--split", "", "--data FILE is scored instead of a split", "give one of them")
        )
    task = file_only.get("--task")
    if task is not None and task not in ("classification", "generation"):
        problems.append(Problem("--task", "", f"unknown task {task!r}", "use classification or generation"))
    if problems:
        raise UsageError(problems)


@app.command()
def evaluate(
    run_dir: Annotated[Path | None, typer.Argument(help="Run directory written by `loralab train`.")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Score this file instead of a split.")] = None,
    split: Annotated[
        str | None, typer.Option("--split", help="test | validation | train (default: test)")
    ] = None,
    predictions: Annotated[
        Path | None, typer.Option("--predictions", help="Score predictions made elsewhere (CSV or JSONL).")
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(
            "--task", help="classification | generation (with --predictions; default: classification)"
        ),
    ] = None,
    rouge_tokenizer: Annotated[
        str | None,
        typer.Option("--rouge-tokenizer", help="auto | whitespace | char | morpheme (default: auto)"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics object.")] = False,
) -> None:
    """Per-class, frequency-bucketed metrics with confidence intervals; Korean-aware ROUGE."""

    def go() -> None:
        _evaluate_mode(
            run_dir,
            predictions,
            run_only={"--data": data, "--split": split},
            file_only={"--task": task, "--rouge-tokenizer": rouge_tokenizer},
        )
        if predictions is not None:
            with reading(predictions):
                metrics = score_predictions(
                    predictions, task=task or "classification", rouge_tokenizer=rouge_tokenizer or "auto"
                )
            where = None
        else:
            assert run_dir is not None  # _evaluate_mode refused neither
            check_run_files(run_dir)  # a damaged run directory is named before the libraries load
            # predict reloads the model (torch, transformers, peft): only a run's evaluation pays for it.
            from loralab.predict.run import evaluate_run

            metrics, where = evaluate_run(run_dir, data=data, split=split or "test")
        if as_json:
            print_json(metrics)
        else:
            print_metrics(metrics, out, where)

    _run(go)


@app.command()
def report(
    run_dirs: Annotated[
        list[Path], typer.Argument(help="One run directory, several to compare, or one study directory.")
    ],
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Folder for report.md, report.html, images.")
    ] = None,
) -> None:
    """A Markdown and a self-contained HTML report of one run or a comparison of several."""

    def go() -> None:
        from loralab.report import build_report  # matplotlib (about a second): only reports need it

        target = out_dir or (run_dirs[0] / "report")
        if len(run_dirs) == 1 and (run_dirs[0] / "study.json").is_file():
            # matplotlib too, through loralab.report: deferred like build_report above
            from loralab.experiments.study_report import build_study_report

            paths = build_study_report(run_dirs[0], target)
        else:
            paths = build_report(list(run_dirs), target)
        out.print(f"report: {paths.markdown}\n        {paths.html}")

    _run(go)


@app.command()
def compare(
    paths: Annotated[
        list[Path], typer.Argument(help="Run directories, or one study directory (its done runs).")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Every number as one JSON object.")] = False,
    metric: Annotated[
        str, typer.Option("--metric", help="Metric of the paired-bootstrap differences.")
    ] = "weighted_f1",
    reference: Annotated[
        str | None, typer.Option("--reference", help="Run the others are compared with (default: the first).")
    ] = None,
) -> None:
    """Runs side by side: differing config keys, cost, metrics with CIs, significance vs a reference."""

    def go() -> None:
        from loralab.commands.compare import run_compare  # matplotlib, through loralab.report

        run_compare(list(paths), as_json=as_json, metric=metric, reference=reference, out=out)

    _run(go)


@app.command()
def ablate(
    base: Annotated[Path, typer.Argument(help="Base experiment YAML (its rank, alpha and layers are kept).")],
    out_dir: Annotated[Path | None, typer.Option("--out", "-o", help="Study directory.")] = None,
    phases: Annotated[
        str | None,
        typer.Option(
            "--phases", help="attention,attention+mlp-in,all-linear (default: all three, in order)."
        ),
    ] = None,
    seeds: Annotated[
        str | None, typer.Option("--seeds", help="Seeds, e.g. 42,43 (default: the base's).")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the study in --out.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Re-run runs whose config changed.")] = False,
    executor: Annotated[str, typer.Option("--executor", help="local | ray")] = "local",
    max_parallel: Annotated[int, typer.Option("--max-parallel", help="Runs at a time (local).")] = 1,
    all_phases: Annotated[
        bool, typer.Option("--all-phases", help="Run every phase even when a rule says stop.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the phases, parameters and memory; train nothing.")
    ] = False,
    early_stopping_patience: Annotated[
        int | None,
        typer.Option("--early-stopping-patience", help="Stop a run after N evaluations gaining < min_gain."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No live table (CI logs).")] = False,
) -> None:
    """Seed 000's staged target-module ablation as a study, decided phase by phase by its rules."""

    def go() -> None:
        # the study runner and the rules import loralab.report (matplotlib): only `ablate` pays for them
        from loralab.commands.ablate import run_ablate_command

        record = run_ablate_command(
            base,
            out_dir,
            phases=phases,
            seeds=seeds,
            resume=resume,
            force=force,
            executor=executor,
            max_parallel=max_parallel,
            all_phases=all_phases,
            dry_run=dry_run,
            early_stopping_patience=early_stopping_patience,
            quiet=quiet,
            console=out,
        )
        if record is not None and any(r.status == "failed" for r in record.runs):
            raise typer.Exit(1)

    _run(go)


@app.command()
def ui(
    port: Annotated[int, typer.Option("--port", "-p", help="Port to serve on.")] = 5000,
    host: Annotated[str, typer.Option("--host", help="Interface to bind (default: this machine only).")] = (
        "127.0.0.1"
    ),
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            help="Tracking store: a URI or an SQLite file (default: mlflow.db here, as train writes).",
        ),
    ] = None,
) -> None:
    """MLflow's own UI on the runs loralab tracked (needs the `ui` extra of loralab, see README)."""
    _check_ranges(("--port", port, (1, 65535, True)))

    def go() -> None:
        code = serve_ui(store, host, port, out)
        if code:
            raise typer.Exit(code)

    _run(go)


@app.command()
def study(
    study_file: Annotated[Path, typer.Argument(help="Study YAML file (a base experiment and its runs).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Study directory (study.json, runs/).")],
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the study in --out; finished runs are kept.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="With --resume: accept a changed study, re-running changed runs.")
    ] = False,
    executor: Annotated[str, typer.Option("--executor", help="local | ray")] = "local",
    max_parallel: Annotated[int, typer.Option("--max-parallel", help="Runs at the same time.")] = 1,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No live table; the summary only.")] = False,
) -> None:
    """Many training runs as one experiment: each run its own process, resumable, failures diagnosed."""

    def go() -> None:
        _check_ranges(("--max-parallel", max_parallel, COUNT))
        # the study runner loads torch (through tracking) and sklearn: only `loralab study` pays for them.
        from loralab.commands.study import run_study_command

        code = run_study_command(
            study_file,
            out_dir,
            resume=resume,
            force=force,
            executor=executor,
            max_parallel=max_parallel,
            quiet=quiet,
        )
        if code:
            raise typer.Exit(code)

    _run(go)


def main() -> None:
    app()
