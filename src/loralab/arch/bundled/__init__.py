"""Architecture configs of popular models, shipped so that `plan` works without the Hugging Face hub.

Each folder is named after a hub id with "/" replaced by "__" (`Qwen__Qwen3-8B`) and holds the model's
`config.json` and a `SOURCE.txt` saying where every value came from (verbatim copy or reconstruction)
and which official parameter count it reproduces. They are facts about public models, not weights.

A model is also found under the hub's legacy id without an organisation (`gpt2`), see
`LEGACY_HUB_IDS`.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

_HERE = Path(__file__).resolve().parent


@cache
def bundled_models() -> dict[str, Path]:
    """Hub id ("Qwen/Qwen3-8B") -> folder holding its bundled config.json and SOURCE.txt."""
    out: dict[str, Path] = {}
    for folder in sorted(_HERE.iterdir(), key=lambda p: p.name.lower()):
        if folder.is_dir() and "__" in folder.name and (folder / "config.json").is_file():
            out[folder.name.replace("__", "/", 1)] = folder
    return out


def bundled_ids() -> list[str]:
    return list(bundled_models())


def find_bundled(name: str) -> tuple[str, Path] | None:
    """The bundled (hub id, folder) for `name`, matched case-insensitively as "org/name" or "org__name"."""
    key = name.strip().replace("__", "/", 1).lower()
    for model_id, folder in bundled_models().items():
        if model_id.lower() == key:
            return model_id, folder
    return None


# The hub's legacy ids without an organisation -> the organisation ids they redirect to. In January and
# February 2024 the hub moved its "canonical" repos (those outside any user or org namespace) under
# organisations and kept the old names as redirects, so `from_pretrained("gpt2")` still works online.
# Sources: huggingface/transformers PR #28795 "canonical repos moves" (2024-01-31) and PR #29001, which
# rewrote every id in transformers to the new names; the ids below appear in that form in transformers'
# src/transformers/models/deprecated/_archive_maps.py (commit 601c83aec170).
LEGACY_HUB_IDS: dict[str, str] = {
    **{
        f"albert-{size}-{v}": f"albert/albert-{size}-{v}"
        for size in ("base", "large", "xlarge", "xxlarge")
        for v in ("v1", "v2")
    },
    "camembert-base": "almanach/camembert-base",
    "ctrl": "Salesforce/ctrl",
    **{
        name: f"distilbert/{name}"
        for name in (
            "distilbert-base-uncased",
            "distilbert-base-uncased-distilled-squad",
            "distilbert-base-uncased-finetuned-sst-2-english",
            "distilbert-base-cased",
            "distilbert-base-cased-distilled-squad",
            "distilbert-base-german-cased",
            "distilbert-base-multilingual-cased",
            "distilgpt2",
            "distilroberta-base",
        )
    },
    **{
        name: f"FacebookAI/{name}"
        for name in (
            "roberta-base",
            "roberta-large",
            "roberta-large-mnli",
            "xlm-roberta-base",
            "xlm-roberta-large",
            "xlm-mlm-en-2048",
            "xlm-mlm-enfr-1024",
            "xlm-clm-enfr-1024",
            "xlm-mlm-xnli15-1024",
            "xlm-mlm-100-1280",
        )
    },
    **{
        name: f"google-bert/{name}"
        for name in (
            "bert-base-uncased",
            "bert-large-uncased",
            "bert-base-cased",
            "bert-large-cased",
            "bert-base-multilingual-uncased",
            "bert-base-multilingual-cased",
            "bert-base-chinese",
            "bert-base-german-cased",
            "bert-large-uncased-whole-word-masking",
            "bert-large-cased-whole-word-masking",
            "bert-large-uncased-whole-word-masking-finetuned-squad",
            "bert-large-cased-whole-word-masking-finetuned-squad",
            "bert-base-cased-finetuned-mrpc",
            "bert-base-german-dbmdz-cased",
            "bert-base-german-dbmdz-uncased",
        )
    },
    **{f"t5-{size}": f"google-t5/t5-{size}" for size in ("small", "base", "large", "3b", "11b")},
    **{
        name: f"openai-community/{name}"
        for name in (
            "gpt2",
            "gpt2-medium",
            "gpt2-large",
            "gpt2-xl",
            "openai-gpt",
            "roberta-base-openai-detector",
            "roberta-large-openai-detector",
        )
    },
    "transfo-xl-wt103": "transfo-xl/transfo-xl-wt103",
    "xlnet-base-cased": "xlnet/xlnet-base-cased",
    "xlnet-large-cased": "xlnet/xlnet-large-cased",
}
_LEGACY_BY_KEY = {legacy.lower(): org_id for legacy, org_id in LEGACY_HUB_IDS.items()}


def legacy_hub_target(name: str) -> str | None:
    """The organisation id the hub redirects the legacy id `name` to ("gpt2" -> "openai-community/gpt2")."""
    return _LEGACY_BY_KEY.get(name.strip().lower())


def find_bundled_or_legacy(name: str) -> tuple[str, Path, bool] | None:
    """`find_bundled`, else the bundled model a legacy id redirects to: (hub id, folder, found by alias)."""
    found = find_bundled(name)
    if found is not None:
        return (*found, False)
    target = legacy_hub_target(name)
    found = find_bundled(target) if target is not None else None
    return (*found, True) if found is not None else None
