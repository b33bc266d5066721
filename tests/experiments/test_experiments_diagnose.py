"""Failure signatures (issue 11): real log lines of each failure, as torch, transformers, PEFT and
loralab print them, map to a cause and a fix; an unknown failure gives no diagnosis but its error line."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from loralab.experiments.diagnose import SIGNATURES, diagnose, error_line

SRC = Path(__file__).resolve().parents[2] / "src" / "loralab"


def _package(name: str) -> Path:
    spec = importlib.util.find_spec(name)  # its folder, without importing torch
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent


HF, PEFT = _package("transformers"), _package("peft")


def _source_has(path: Path, text: str) -> bool:
    return text in path.read_text(encoding="utf-8")


# (signature, log tail, exit code). Each line is copied from the library or loralab source (the
# `sources` test below checks that the distinctive part is still there).
CASES = [
    (
        "bf16-gradscaler",
        'Traceback (most recent call last):\n  File "train.py", line 9, in <module>\n'
        "RuntimeError: \"_amp_foreach_non_finite_check_and_unscale_cuda\" not implemented for 'BFloat16'\n",
        1,
    ),
    (
        "disk-offload",
        "ValueError: The current `device_map` had weights offloaded to the disk, which needed to be "
        "re-saved. This is either because the weights are not in `safetensors` format, or because the "
        "model uses an internal weight format different than the one saved (i.e. most MoE models). "
        "Please provide an `offload_folder` for them in `from_pretrained`.\n",
        1,
    ),
    (
        "token-type-ids",
        "TypeError: LlamaForCausalLM.forward() got an unexpected keyword argument 'token_type_ids'\n",
        1,
    ),
    (
        "cuda-oom",
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity "
        "of 23.69 GiB of which 1.23 GiB is free.\n",
        1,
    ),
    (
        "nan-loss",
        "error: training loss became nan at step 2; the run was stopped. Last good checkpoint: none yet. "
        "Likely cause: learning rate 1e+30 too high for this model: try 10x lower\n",
        2,
    ),
    ("missing-pad-token", "ValueError: Cannot handle batch sizes > 1 if no padding token is defined.\n", 1),
    (
        "missing-pad-token",
        "ValueError: Asking to pad but the tokenizer does not have a padding token. Please select a token to "
        "use as `pad_token` `(tokenizer.pad_token = tokenizer.eos_token e.g.)`\n",
        1,
    ),
    (
        "unmatched-target",
        "error [plan.lora.config.target_modules] target 'nosuch' matches no module of /m\n"
        "preflight: would fail (1 error)\nerror: preflight found problems that would fail the run:\n"
        "[error] plan.lora.config.target_modules: target 'nosuch' matches no module of /m\n",
        2,
    ),
    (
        "unmatched-target",
        "ValueError: Target modules {'nosuch'} not found in the base model. Please check the target modules "
        "and try again.\n",
        1,
    ),
    (
        "preflight",
        "error: preflight found problems that would fail the run:\n[error] data.train_file: file not found\n",
        2,
    ),
    (
        "config",
        "error: 1 problem in the configuration:\n  - exp.yaml: lora.config.lora_alpah: unknown LoraConfig "
        "field `lora_alpah`; did you mean `lora_alpha`?\n",
        2,
    ),
    ("killed", "epoch 1.00 step 17\n", -9),
    ("killed", "", 137),
]


@pytest.mark.parametrize(
    ("signature", "log", "code"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_a_known_failure_is_diagnosed(signature: str, log: str, code: int) -> None:
    d = diagnose("some earlier output\n" + log, code, "/s/runs/a-s1/experiment.yaml")
    assert d is not None and d.signature == signature
    assert d.cause and d.fix
    if signature != "killed":
        assert d.evidence and d.evidence in log  # the line that matched, verbatim
    if signature == "cuda-oom":  # the fix points at the plan's memory estimate for this run
        assert "loralab plan /s/runs/a-s1/experiment.yaml --gpu-mem 23.69GiB" in d.fix


def test_the_messages_are_the_libraries_own() -> None:
    """The signatures match what the installed libraries and loralab actually print."""
    assert _source_has(SRC / "train" / "preflight.py", "_amp_foreach_non_finite_check_and_unscale_cuda")
    assert _source_has(HF / "integrations" / "accelerate.py", "Please provide an `offload_folder`")
    assert _source_has(HF / "modeling_layers.py", "Cannot handle batch sizes > 1 if no padding token")
    assert _source_has(HF / "tokenization_utils_base.py", "does not have a padding token")
    assert _source_has(PEFT / "tuners" / "tuners_utils.py", "not found in the base model")
    assert _source_has(SRC / "train" / "trainer.py", "training loss became")
    assert _source_has(SRC / "plan" / "planner.py", "matches no module")
    assert _source_has(SRC / "train" / "run.py", "preflight found problems")
    assert _source_has(SRC / "errors.py", "in the configuration")
    by_id = {s.id: s for s in SIGNATURES}
    assert re.search(by_id["disk-offload"].pattern, "Please provide an `offload_folder` for them")


def test_an_unknown_failure_has_no_diagnosis_but_its_error_line() -> None:
    log = "step 3\nTraceback (most recent call last):\n  File \"x.py\"\nKeyError: 'labels'\n"
    log += "wandb: cleaning up\n"
    assert diagnose(log, 1) is None
    assert error_line(log, 1) == "KeyError: 'labels'"


@pytest.mark.parametrize(
    ("log", "code", "line"),
    [
        ("x\nerror: 1 problem in the configuration:\n  - f.yaml: a.b: bad\n", 2,
         "error: 1 problem in the configuration: - f.yaml: a.b: bad"),
        ("internal error: ValueError: boom (run again with --debug)\n", 1,
         "internal error: ValueError: boom (run again with --debug)"),
        ("epoch 0.5\n", -9, "killed by SIGKILL"),
        ("", 137, "killed (exit code 137: the OOM killer or kill -9)"),
    ],
)  # fmt: skip
def test_the_error_line(log: str, code: int, line: str) -> None:
    assert error_line(log, code) == line
