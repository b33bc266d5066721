"""The part of a PEFT `LoraConfig` that decides which modules get adapters and how many parameters train.

Torch-free: built from the `lora.config` mapping of the experiment file (PEFT's own field names), so that
`plan` can run without importing peft. Options that change parameter counts in ways the planner does
not model are refused with a clear message rather than silently miscounted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loralab.errors import PlanError, Problem

INCLUDE_LINEAR_LAYERS_SHORTHAND = "all-linear"  # peft.utils.constants

# LoraConfig fields that change which parameters exist or train, beyond what `plan` models. Their
# defaults (None/False/empty) are fine; any other value is refused so that no count is silently wrong.
_UNMODELLED = {
    "layer_replication": "duplicates layers (extra frozen copies and adapters)",
    "target_parameters": "adapts nn.Parameter tensors (MoE experts) instead of modules",
    "trainable_token_indices": "trains selected embedding rows",
    "use_bdlora": "block-diagonal LoRA changes the adapter shapes",
    "target_modules_bd_a": "block-diagonal LoRA changes the adapter shapes",
    "target_modules_bd_b": "block-diagonal LoRA changes the adapter shapes",
    "use_qalora": "QA-LoRA pools the input dimension",
    "monteclora_config": "MonteCLoRA adds variational parameters",
    "kasa_config": "KaSA changes the adapter parametrisation",
    "arrow_config": "Arrow routing adds router parameters",
    "megatron_config": "Megatron parallel layers shard the adapters",
}

# Task types whose PeftModel subclass appends classifier heads to modules_to_save
# (peft.peft_model.PeftModelForSequenceClassification / ForTokenClassification / ForQuestionAnswering).
TASK_HEAD_NAMES: dict[str, list[str]] = {
    "SEQ_CLS": ["classifier", "score"],
    "TOKEN_CLS": ["classifier", "score"],
    "QUESTION_ANS": ["qa_outputs"],
}


@dataclass
class LoraSpec:
    """Normalised LoRA options, with PEFT's names and defaults (peft 0.21 `LoraConfig`)."""

    r: int = 8
    lora_alpha: float = 8
    target_modules: list[str] | str | None = None
    exclude_modules: list[str] | str | None = None
    layers_to_transform: list[int] | None = None
    layers_pattern: list[str] | None = None
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)
    modules_to_save: list[str] | None = None
    bias: str = "none"
    use_dora: bool = False
    lora_bias: bool = False
    use_rslora: bool = False
    lora_dropout: float = 0.0  # PEFT's default; decides the activations the adapters keep
    task_type: str | None = None
    # How each layers_to_transform entry was written, for display: [(written, resolved)].
    layer_resolution: list[tuple[int, int]] = field(default_factory=list)

    @property
    def uses_all_linear(self) -> bool:
        return (
            isinstance(self.target_modules, str)
            and self.target_modules.lower() == INCLUDE_LINEAR_LAYERS_SHORTHAND
        )

    def effective_modules_to_save(self) -> list[str]:
        """modules_to_save as the PeftModel for the task ends up with (heads appended)."""
        names = list(self.modules_to_save or [])
        extra = TASK_HEAD_NAMES.get((self.task_type or "").upper(), [])
        return names + extra if (names or extra) else []

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "<config>", key: str = "lora.config") -> LoraSpec:
        problems: list[Problem] = []
        for name, why in _UNMODELLED.items():
            if d.get(name) not in (None, False, [], {}, ""):
                problems.append(
                    Problem(
                        source,
                        f"{key}.{name}",
                        f"`plan` does not model `{name}` ({why}), so its counts would be wrong",
                        f"remove `{name}` to plan the plain LoRA part",
                    )
                )
        task_type = d.get("task_type")
        if task_type is not None:
            task_type = str(getattr(task_type, "value", task_type)).upper()
        tm = d.get("target_modules")
        spec = cls(
            r=int(d.get("r", 8)),
            lora_alpha=float(d.get("lora_alpha", 8)),
            target_modules=_str_or_list(tm),
            exclude_modules=_str_or_list(d.get("exclude_modules")),
            layers_to_transform=_int_list(d.get("layers_to_transform")),
            layers_pattern=_list(d.get("layers_pattern")),
            rank_pattern={str(k): int(v) for k, v in (d.get("rank_pattern") or {}).items()},
            alpha_pattern={str(k): float(v) for k, v in (d.get("alpha_pattern") or {}).items()},
            modules_to_save=_list(d.get("modules_to_save")),
            bias=str(d.get("bias", "none")),
            use_dora=bool(d.get("use_dora", False)),
            lora_bias=bool(d.get("lora_bias", False)),
            use_rslora=bool(d.get("use_rslora", False)),
            lora_dropout=float(d.get("lora_dropout") or 0.0),
            task_type=task_type,
        )
        problems.extend(spec._rule_problems(source, key))
        if problems:
            raise PlanError(problems)
        return spec

    def _rule_problems(self, source: str, key: str) -> list[Problem]:
        """PEFT's own LoraConfig.__post_init__ rules, checked here so `plan` fails the way training would."""
        out: list[Problem] = []
        if self.bias not in ("none", "all", "lora_only"):
            out.append(
                Problem(source, f"{key}.bias", f"unknown bias {self.bias!r}", "use none, all or lora_only")
            )
        if self.r < 1:
            out.append(Problem(source, f"{key}.r", f"rank must be >= 1, got {self.r}", "use e.g. r: 8"))
        if isinstance(self.target_modules, str) and self.layers_to_transform is not None:
            fix = (
                "list the module names (`loralab modules MODEL` shows them) instead of all-linear"
                if self.uses_all_linear
                else "give target_modules as a list of names"
            )
            out.append(
                Problem(
                    source,
                    f"{key}.layers_to_transform",
                    "PEFT refuses layers_to_transform when target_modules is a string "
                    f"({self.target_modules!r})",
                    fix,
                )
            )
        if self.layers_pattern and self.layers_to_transform is None:
            out.append(
                Problem(
                    source,
                    f"{key}.layers_pattern",
                    "layers_pattern only works together with layers_to_transform",
                    "add layers_to_transform or remove layers_pattern",
                )
            )
        return out


def _str_or_list(v: Any) -> list[str] | str | None:
    if v is None or isinstance(v, str):
        return v
    return [str(x) for x in v]


def _list(v: Any) -> list[str] | None:
    if v is None:
        return None
    if isinstance(v, str):
        return [v]
    return [str(x) for x in v]


def _int_list(v: Any) -> list[int] | None:
    if v is None:
        return None
    if isinstance(v, int):
        return [v]
    return [int(x) for x in v]
