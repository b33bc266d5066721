"""Known failure signatures of a training run, read from the tail of its log: what caused the failure
and how to fix it (seed 003 lost five of six models to three of these without an explanation).

Each signature is the text the failing library prints (torch, transformers, PEFT) or loralab's own
message for the same failure (its preflight and NaN guard catch several of them before they happen).
The table is ordered from specific to general: an unmatched target also fails preflight, and the
target is the cause worth naming.
"""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass

from loralab.experiments.record import Diagnosis

TAIL_LINES = 300
# `loralab ...` prints a user error as "error: ..." and a bug as "internal error: ...".
_LORALAB_ERROR = re.compile(r"^(internal )?error: ")
_EXCEPTION = re.compile(
    r"^([A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit|Failed|Refused)|KeyboardInterrupt)\b:?"
)
_CAPACITY = re.compile(r"total capacity of ([\d.]+ ?[KMGT]iB)")
OOM_KILL_CODE = 137  # 128 + SIGKILL, as a shell or container runtime reports a process the kernel killed


@dataclass(frozen=True)
class Signature:
    id: str
    pattern: re.Pattern[str]
    cause: str
    fix: str


def _re(*alternatives: str) -> re.Pattern[str]:
    return re.compile("|".join(alternatives), re.IGNORECASE)


SIGNATURES: tuple[Signature, ...] = (
    Signature(
        "bf16-gradscaler",
        _re(r"_amp_foreach_non_finite_check_and_unscale_cuda.{0,40}BFloat16"),
        "bf16 weights trained with fp16 mixed precision: the fp16 GradScaler cannot unscale bf16 gradients",
        "use `training_args.bf16: true` (and `fp16: false`) with bf16 weights, or load the model in float32",
    ),
    Signature(
        "disk-offload",
        _re(
            r"offloaded to the disk.*offload_folder",
            r"provide an `?offload_folder",
            r"['\"]disk['\"].*device_map",
        ),
        "the device_map offloaded layers to disk but from_pretrained got no offload_folder",
        "give the model enough GPU/CPU memory (no disk offload), or quantize it; `loralab train` sets an "
        "offload_folder inside the run directory when it loads with a device_map",
    ),
    Signature(
        "token-type-ids",
        _re(r"got an unexpected keyword argument 'token_type_ids'"),
        "the tokenizer returns token_type_ids, which this decoder-only model's forward does not take",
        "drop token_type_ids from the batch (loralab's preflight checks the forward's arguments; "
        "run `loralab train CONFIG --check`)",
    ),
    Signature(
        "cuda-oom",
        _re(r"CUDA out of memory", r"OutOfMemoryError"),
        "the GPU ran out of memory",
        "see the memory estimate: run `loralab plan {experiment} --gpu-mem {gpu_mem}` and lower "
        "per_device_train_batch_size (raise gradient_accumulation_steps), data.max_length, or turn on "
        "gradient_checkpointing / 4-bit loading as it suggests",
    ),
    Signature(
        "nan-loss",
        _re(r"training loss became (nan|inf|-inf)", r"loss (is|became) nan"),
        "the training loss became NaN/inf (diverged)",
        "lower training_args.learning_rate (10x), check the data for empty or broken rows, and avoid fp16 "
        "with models trained in bf16",
    ),
    Signature(
        "missing-pad-token",
        _re(r"Cannot handle batch sizes > 1 if no padding token", r"does not have a padding token"),
        "the tokenizer (or model config) has no pad token, so batches of several rows cannot be padded",
        "set the tokenizer's pad_token (e.g. to eos_token) and model.config.pad_token_id, or use a batch "
        "size of 1",
    ),
    Signature(
        "unmatched-target",
        _re(r"matches no module", r"Target modules .* not found in the base model"),
        "a LoRA target_modules entry matches no module of the model",
        "run `loralab modules MODEL` and use its module names in lora.config.target_modules",
    ),
    Signature(
        "preflight",
        _re(r"preflight found problems"),
        "the preflight checks found problems that would fail the run",
        "read the [error] lines above in the log, or run `loralab train {experiment} --check`",
    ),
    Signature(
        "config",
        _re(r"problems? in the configuration"),
        "the run's experiment file has problems",
        "fix the keys named in the log (the study's overrides or the base experiment)",
    ),
)


def tail(text: str, lines: int = TAIL_LINES) -> list[str]:
    return [line.rstrip() for line in text.splitlines()[-lines:]]


def diagnose(
    log_text: str, exit_code: int | None = None, experiment: str = "RUN/experiment.yaml"
) -> Diagnosis | None:
    """The known failure signature found in the log's tail (the last match of the first signature in
    table order), else "killed" for a process that a signal ended, else None."""
    lines = tail(log_text)
    # torch's OOM message states the GPU's capacity: the plan command is given for that budget.
    capacity = _CAPACITY.search(log_text)
    gpu_mem = capacity.group(1).replace(" ", "") if capacity else "<your GPU's memory, e.g. 24GiB>"
    for sig in SIGNATURES:
        for line in reversed(lines):
            if sig.pattern.search(line):
                fix = sig.fix.format(experiment=experiment, gpu_mem=gpu_mem)
                return Diagnosis(sig.id, sig.cause, fix, line.strip()[:300])
    if exit_code is not None and (exit_code < 0 or exit_code == OOM_KILL_CODE):
        return Diagnosis(
            "killed",
            f"the process was killed ({_signal_name(exit_code)}): the OOM killer or kill -9",
            "check host memory (dmesg | grep -i oom) and `loralab plan` for the run's RAM; then `--resume`",
            f"exit code {exit_code}",
        )
    return None


def error_line(log_text: str, exit_code: int | None = None) -> str:
    """The line that says what went wrong: loralab's own `error:` line (with the first problem when it
    is a heading), else the last exception line, else how the process ended."""
    lines = [line for line in tail(log_text) if line.strip()]
    for i in range(len(lines) - 1, -1, -1):
        if _LORALAB_ERROR.match(lines[i]):
            text = lines[i]
            if text.endswith(":") and i + 1 < len(lines):
                text += " " + lines[i + 1].strip()
            return text
    for line in reversed(lines):
        if _EXCEPTION.match(line.strip()):
            return line.strip()
    if exit_code is not None and exit_code < 0:
        return f"killed by {_signal_name(exit_code)}"
    if exit_code == OOM_KILL_CODE:
        return "killed (exit code 137: the OOM killer or kill -9)"
    return lines[-1].strip() if lines else f"exit code {exit_code} with an empty log"


def _signal_name(exit_code: int) -> str:
    number = -exit_code if exit_code < 0 else exit_code - 128
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
