"""DeepSpeed ZeRO-2 and ZeRO-3 through `loralab train -n 2` on CPU, end to end.

DeepSpeed's "cpu" accelerator runs with torch's gloo backend when oneCCL
(oneccl_bindings_for_pytorch) is absent, so no Intel package is needed; the Trainer's own AdamW is the
client optimizer (no DeepSpeedCPUAdam build). DeepSpeed's shared-memory comm op needs g++: built at
install by scripts/test.sh (DS_BUILD_SHM_COMM=1), else JIT-built by the first DeepSpeed process on a
machine (about 75 s on 2 cores, cached in ~/.cache/torch_extensions).
Skipped where deepspeed is not installed (it is not a loralab dependency; scripts/test.sh installs it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from train_fixtures import experiment_yaml, make_data, tiny_bert

pytest.importorskip("deepspeed")
if shutil.which("c++") is None and shutil.which("g++") is None:
    pytest.skip(
        "DeepSpeed's CPU accelerator JIT-builds its comm op with a C++ compiler", allow_module_level=True
    )

pytestmark = pytest.mark.slow  # three short runs, ~50 s together (the comm op is built at install)

# DS_ACCELERATOR: pick the CPU accelerator without DeepSpeed's probe-and-warn.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
RANK = 4  # experiment_yaml's lora.config.r


def _ds_json(folder: Path, stage: int) -> Path:
    zo: dict[str, object] = {"stage": stage}
    if stage == 3:
        # Without it PEFT saves empty tensors under ZeRO-3 (peft #2892); preflight refuses that.
        zo["stage3_gather_16bit_weights_on_model_save"] = True
        # DeepSpeed keeps parameters under 1e5 elements whole on every rank: in a model this small
        # that is all of them, and ZeRO-3 would shard nothing. 0 shards every one, as on a real model.
        zo["stage3_param_persistence_threshold"] = 0
    ds = {
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "train_batch_size": "auto",
        "gradient_clipping": "auto",
        "zero_optimization": zo,
    }
    path = folder / f"zero{stage}.json"
    path.write_text(json.dumps(ds), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    tmp = tmp_path_factory.mktemp("ds")
    model = tiny_bert(tmp / "model")
    train_csv, test_csv = make_data(tmp / "data", n_train=48, n_test=9)
    return model, train_csv, test_csv


def _train(
    inputs: tuple[Path, Path, Path], folder: Path, stage: int, processes: int = 2
) -> tuple[Path, str | None]:
    """The run folder, and why the run failed (None when it completed)."""
    folder.mkdir()
    ds = _ds_json(folder, stage)
    cfg = experiment_yaml(folder, *inputs, epochs=1, extra=f"deepspeed: {ds.name}\n")
    # Two optimizer steps, no evaluation or checkpoints during training: the run is about ZeRO's
    # step and its final save.
    text = cfg.read_text().replace("  num_train_epochs: 1\n", "  num_train_epochs: 1\n  max_steps: 2\n")
    text = text.replace("eval_strategy: epoch", "eval_strategy: 'no'")
    cfg.write_text(text.replace("save_strategy: steps", "save_strategy: 'no'"), encoding="utf-8")
    out = folder / "run"
    cmd = [
        sys.executable,
        "-m",
        "loralab",
        "train",
        str(cfg),
        "--output",
        str(out),
        "--quiet",
        "-n",
        str(processes),
    ]
    p = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=900, check=False)
    return out, (p.stderr[-3000:] if p.returncode else None)


@dataclass
class Finished:
    lora: dict[str, Any]  # the saved adapter's lora_A / lora_B tensors
    accuracy: float


@pytest.fixture(scope="module")
def zero2(inputs: tuple[Path, Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Finished:
    run, failed = _train(inputs, tmp_path_factory.mktemp("zero2") / "z", 2)
    assert failed is None, failed
    return _finished(run, inputs[0])


def _finished(run: Path, model: Path) -> Finished:
    import torch
    from safetensors.torch import load_file
    from transformers import BertForSequenceClassification

    base = dict(BertForSequenceClassification.from_pretrained(model).named_modules())
    tensors = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    lora = {k: v for k, v in tensors.items() if ".lora_A." in k or ".lora_B." in k}
    assert len(lora) == 2 * 13  # 6 linear layers x 2 encoder layers + the pooler, A and B each
    for name, t in lora.items():
        # base_model.model.<module>.lora_A.weight -> <module> in the plain model
        module = base[name.removeprefix("base_model.model.").rsplit(".lora_", 1)[0]]
        assert isinstance(module, torch.nn.Linear)
        want = (RANK, module.in_features) if ".lora_A." in name else (module.out_features, RANK)
        assert tuple(t.shape) == want, name
        # lora_B starts at zero: non-zero means the optimizer step reached the saved adapter.
        assert t.abs().sum() > 0, f"{name} is all zeros"
    # metrics.json exists only when the final scoring ran to the end
    return Finished(lora, json.loads((run / "metrics.json").read_text())["accuracy"])


def test_zero2_trains_and_saves_the_adapter(zero2: Finished) -> None:
    assert zero2.lora and 0.0 <= zero2.accuracy <= 1.0  # the fixture ran, checked and read the run


def test_zero3_trains_scores_and_saves_zero2s_adapter(
    inputs: tuple[Path, Path, Path], zero2: Finished, tmp_path: Path
) -> None:
    """ZeRO-3 with every parameter sharded: the gathered adapter is ZeRO-2's (same seed, data and
    steps), not a stale or partial shard, and the final scoring, where every rank joins rank 0's
    forward passes with its shards, gives ZeRO-2's accuracy."""
    import torch

    run, failed = _train(inputs, tmp_path / "zero3", 3)
    assert failed is None, failed
    z3 = _finished(run, inputs[0])
    assert z3.lora.keys() == zero2.lora.keys()
    for k, v in zero2.lora.items():
        torch.testing.assert_close(z3.lora[k], v, rtol=1e-3, atol=1e-5, msg=k)
    assert z3.accuracy == pytest.approx(zero2.accuracy, abs=1e-6)


def test_one_process_deepspeed_runs_in_a_world_of_one(
    inputs: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """`-n 1` trains in this process: loralab gives it torchrun's variables for a world of one, else
    DeepSpeed looks for MPI (ModuleNotFoundError: mpi4py)."""
    run, failed = _train(inputs, tmp_path / "one", 2, processes=1)
    assert failed is None, failed
    assert _finished(run, inputs[0]).lora
