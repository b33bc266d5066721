"""Re-read a saved adapter and compare it with the plan: catch empty or mis-shaped adapters at once.

Under DeepSpeed ZeRO-3 without `stage3_gather_16bit_weights_on_model_save`, or FSDP with a sharded
state dict, `save_pretrained` writes each rank's shard placeholder: tensors of 0 elements, or none at
all, and the run still "succeeds" (peft #2892, trl #4416, accelerate #3508). Nobody notices until the
adapter is loaded for evaluation or deployment. The plan knows every tensor PEFT should write, so the
file's header (names and shapes; no tensor is loaded) is checked against it right after saving.

Key format, from peft 0.21's `get_peft_model_state_dict` (checked in tests against real saves):
every key starts with "base_model.model." then the module's name in the base model; the adapter name
("default") is removed. Per adapted Linear/Conv1D: `lora_A.weight` (r, in), `lora_B.weight` (out, r),
with `lora_bias` also `lora_B.bias` (out,); per adapted Embedding: `lora_embedding_A` (r, num_embeddings)
and `lora_embedding_B` (embedding_dim, r); DoRA adds `lora_magnitude_vector` (out,). Conv1D is
handled by PEFT (fan_in_fan_out) so its shapes are those of a Linear. `bias="lora_only"` saves the
adapted modules' `base_layer.bias`; `bias="all"` every key of the model's state dict ending in ".bias"
(adapted modules' under `base_layer.`; a modules_to_save module's twice more, under
`original_module.` and `modules_to_save.`). modules_to_save saves the trained copy under the original
module's names. A targeted embedding layer's base weights are saved as `base_layer.weight`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from loralab.arch.records import ModuleRecord
from loralab.errors import LoralabError
from loralab.plan.planner import Plan

ADAPTER_FILE = "adapter_model.safetensors"
PREFIX = "base_model.model."  # PeftModel -> LoraModel -> the base model (non-prompt-learning methods)
SHOWN_PROBLEMS = 5  # problems listed in the error; the rest are counted

FIX = (
    "under DeepSpeed ZeRO-3 set `stage3_gather_16bit_weights_on_model_save: true`; under FSDP save a "
    "FULL_STATE_DICT (`fsdp_state_dict_type: FULL_STATE_DICT`), see accelerate #3508 / peft #2892"
)


@dataclass
class ExpectedAdapter:
    """The tensors PEFT writes for a plan, and what the plan cannot say."""

    tensors: dict[str, tuple[int, ...]]
    # Key prefixes of adapted modules whose tensors the plan cannot describe: anything under them in
    # the file is accepted rather than reported, so an unusual layer type gives no false alarm.
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class SavedAdapterError(LoralabError):
    """The adapter written at the end of training is empty, truncated or not what the plan says."""

    def __init__(self, path: Path, problems: list[str]):
        self.path = path
        self.problems = list(problems)
        super().__init__(self.message())

    def message(self) -> str:
        n = len(self.problems)
        lines = [f"the saved adapter {self.path} is not usable: {n} problem{'s' if n != 1 else ''}"]
        lines += [f"  - {p}" for p in self.problems[:SHOWN_PROBLEMS]]
        if n > SHOWN_PROBLEMS:
            lines.append(f"  ... and {n - SHOWN_PROBLEMS} more")
        lines.append(f"fix: {FIX}")
        return "\n".join(lines)


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _is_linear(m: ModuleRecord | None, cls: str) -> bool:
    # The record's `linear` flag is set for nn.Linear and transformers' Conv1D (what "all-linear" picks).
    return m.linear if m is not None else cls in ("Linear", "Conv1D")


def expected_adapter(plan: Plan) -> ExpectedAdapter:
    """Names and shapes of the tensors in adapter_model.safetensors for `plan`, plus skip notes."""
    arch, spec = plan.arch, plan.spec
    records = {m.name: m for m in arch.modules}
    out = ExpectedAdapter(tensors={})
    t = out.tensors
    adapted: set[str] = set()
    for mc in plan.counts.modules:
        key = PREFIX + mc.name
        rec = records.get(mc.name)
        adapted.add(mc.name)
        if mc.kind == "embedding":
            t[f"{key}.lora_embedding_A"] = (mc.r, mc.in_features)
            t[f"{key}.lora_embedding_B"] = (mc.out_features, mc.r)
        elif _is_linear(rec, mc.cls):
            t[f"{key}.lora_A.weight"] = (mc.r, mc.in_features)
            t[f"{key}.lora_B.weight"] = (mc.out_features, mc.r)
            if spec.lora_bias:
                t[f"{key}.lora_B.bias"] = (mc.out_features,)
        else:
            # Conv layers and other PEFT layer types have kernel dimensions the record does not keep.
            out.skipped.append(key + ".")
            out.notes.append(f"{mc.name} ({mc.cls}): adapter shapes not checked for this layer type")
            continue
        if spec.use_dora:
            t[f"{key}.lora_magnitude_vector"] = (mc.out_features,)

    saved = plan.match.modules_to_save
    if spec.bias == "lora_only":
        for name in adapted:
            rec = records.get(name)
            for p in rec.params if rec else ():
                if p.name == "bias":
                    t[f"{PREFIX}{name}.base_layer.bias"] = p.shape
    elif spec.bias == "all":
        # Every state-dict key ending in ".bias": tied duplicates too (state_dict() lists each name).
        for rec in arch.modules:
            owner = next((s for s in saved if rec.name == s or rec.name.startswith(s + ".")), None)
            for p in rec.params:
                if p.name != "bias":
                    continue
                if owner is not None:
                    # The filter sees the ModulesToSaveWrapper's inner keys too: both the frozen original
                    # and the copy ("modules_to_save.default" loses its adapter name).
                    rel = rec.name[len(owner) :]
                    for inner in ("original_module", "modules_to_save"):
                        t[f"{PREFIX}{owner}.{inner}{rel}.bias"] = p.shape
                else:
                    mid = ".base_layer" if rec.name in adapted else ""
                    t[f"{PREFIX}{rec.name}{mid}.bias"] = p.shape

    # modules_to_save: the trained copy, under the wrapped module's own parameter names.
    for s in saved:
        for rec in arch.subtree(s):
            for p in rec.params:
                t[f"{PREFIX}{rec.name}.{p.name}"] = p.shape

    # save_embedding_layers="auto": a targeted input/output embedding's base weights travel along.
    for name in plan.counts.saved_extra:
        rec = records.get(name)
        for p in rec.params if rec else ():
            t[f"{PREFIX}{name}.base_layer.{p.name}"] = p.shape
    return out


def expected_adapter_tensors(plan: Plan) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape that PEFT writes into adapter_model.safetensors for `plan`."""
    return expected_adapter(plan).tensors


def read_adapter_header(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from a safetensors file's header, without loading any tensor.

    safetensors validates the header against the file's length, so a truncated file raises."""
    from safetensors import safe_open  # torch-side dependency: only the training path imports this

    shapes: dict[str, tuple[int, ...]] = {}
    with safe_open(str(path), framework="pt") as f:
        names: list[str] = list(f.keys())  # safe_open objects are not iterable
        for k in names:
            shapes[k] = tuple(int(d) for d in f.get_slice(k).get_shape())
    return shapes


def check_saved_adapter(folder: Path, plan: Plan) -> list[str]:
    """One line per problem with `folder`/adapter_model.safetensors; [] when it matches the plan."""
    path = Path(folder) / ADAPTER_FILE
    if not path.is_file():
        return [f"{path}: file missing"]
    try:
        got = read_adapter_header(path)
    except Exception as e:  # SafetensorError, OSError, bad header JSON: all mean an unreadable file
        return [f"{path}: unreadable ({type(e).__name__}: {e}); the file is truncated or corrupt"]
    if not got:
        return [f"{path}: no tensors at all"]
    exp = expected_adapter(plan)
    problems: list[str] = []
    empty = [k for k, s in got.items() if 0 in s]
    problems += [f"{k}: 0 elements (shape {_shape(got[k])}), a shard placeholder" for k in empty]
    if len(empty) == len(got):
        # Every tensor is a placeholder: listing each name again as mis-shaped would only repeat that.
        return problems
    for k, shape in exp.tensors.items():
        if k not in got:
            problems.append(f"{k}: missing, expected shape {_shape(shape)}")
        elif k not in empty and got[k] != shape:
            problems.append(f"{k}: shape {_shape(got[k])}, expected {_shape(shape)}")
    for k in got:
        if k not in exp.tensors and not any(k.startswith(p) for p in exp.skipped):
            problems.append(f"{k}: unexpected tensor (shape {_shape(got[k])}), not in the plan")
    return problems


def verify_saved_adapter(folder: Path, plan: Plan) -> None:
    """Raise SavedAdapterError when the adapter in `folder` is empty, truncated or mis-shaped."""
    problems = check_saved_adapter(folder, plan)
    if problems:
        raise SavedAdapterError(Path(folder) / ADAPTER_FILE, problems)
