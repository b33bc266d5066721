"""Guards that make an evaluation unable to print nonsense silently (seeds 003 and 004).

Seed 004 printed accuracy, BLEU and ROUGE of 0.000 and moved on; seed 003 reported ROUGE-1 ==
ROUGE-L to four digits for two models. Both are symptoms of a broken evaluation rather than of a
bad model. `check_metrics` returns one loud, self-explaining warning per symptom (an empty list
when nothing looks wrong); suspicious numbers never raise, so a caller can print the warnings next to
the numbers.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from loralab.errors import LoralabError
from loralab.evaluate.tokenize_ko import has_hangul

GENERATION_TASKS = frozenset({"generation", "summarization", "qa", "translation"})
TASKS = GENERATION_TASKS | {"classification"}
# Names of quality scores (after an "eval_"/"test_" prefix): losses, lengths, counts and speeds are not.
_SCORE_RE = re.compile(
    r"^(rouge\w*|bleu|chrf\w*|meteor|bertscore\w*|exact_match|accuracy|\w*f1|\w*precision|\w*recall)$"
)
_PREFIX_RE = re.compile(r"^(eval|test|predict|validation)_")
# Pairs of metrics that measure different things, so equality to 4 digits is a symptom. ROUGE-L is
# the LCS, a subsequence of the unigram matches (Lin 2004), so ROUGE-1 == ROUGE-L means every match
# is in order: copied text, one-token predictions, or a tokenizer that left almost nothing.
_GENERATION_PAIRS = (("rouge1", "rougeL"), ("rouge1", "rouge2"), ("rouge2", "rougeL"))
# weighted == macro is expected when every class has the same support (e.g. Banking77's test split,
# 40 per class), so these are only flagged when the supports differ.
_CLASSIFICATION_PAIRS = (
    ("weighted_f1", "macro_f1"),
    ("weighted_precision", "macro_precision"),
    ("weighted_recall", "macro_recall"),
)


def _scores(metrics: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = _PREFIX_RE.sub("", key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if _SCORE_RE.match(name):
            out[name] = float(value)
    return out


def _all_zero(scores: dict[str, float], task: str, references: Sequence[Any] | None) -> list[str]:
    if not scores or any(v != 0.0 for v in scores.values()):
        return []
    causes = [
        "predictions are empty (generation stopped at once, or only the prompt was decoded and stripped)",
        "the wrong column was scored (e.g. the prompt or an id column instead of the generated text)",
        "predictions and references/labels are misaligned (shuffled, or a different split)",
    ]
    if task in GENERATION_TASKS:
        hangul = references is not None and any(isinstance(r, str) and has_hangul(r) for r in references)
        causes.insert(
            0,
            "the tokenizer dropped the text's script: rouge_score's default keeps only [a-z0-9], so Hangul "
            "scores 0 (huggingface/evaluate#256); use loralab's generation_metrics(tokenizer='auto')"
            + (" -- the references DO contain Hangul" if hangul else ""),
        )
    else:
        causes.append("label ids are mapped differently in training and evaluation (id2label mismatch)")
    names = ", ".join(sorted(scores))
    return [f"ALL METRICS ARE ZERO ({names}). Likely causes: " + "; ".join(causes) + "."]


def _identical(
    scores: dict[str, float], task: str, supports: Sequence[int] | None, references: Sequence[Any] | None
) -> list[str]:
    warnings: list[str] = []
    if task in GENERATION_TASKS:
        for a, b in _GENERATION_PAIRS:
            if (
                a in scores
                and b in scores
                and scores[a] != 0.0
                and round(scores[a], 4) == round(scores[b], 4)
            ):
                warnings.append(
                    f"{a} == {b} == {scores[a]:.4f} to 4 digits: these measure different things, so the "
                    "predictions likely copy the input/reference verbatim, are single tokens, or the "
                    "tokenizer kept almost nothing of the text (Hangul dropped: huggingface/evaluate#256); "
                    "genuine only for very short outputs whose matches all keep the reference's order."
                )
        return warnings
    if supports is None and references is not None:
        supports = list(Counter(references).values())
    for a, b in _CLASSIFICATION_PAIRS:
        if (
            a not in scores
            or b not in scores
            or scores[a] == 0.0
            or round(scores[a], 4) != round(scores[b], 4)
        ):
            continue
        if supports is not None and len(set(supports)) <= 1:
            continue  # equal supports make the weights uniform: weighted == macro by definition
        if supports is None:
            warnings.append(
                f"{a} == {b} == {scores[a]:.4f}: expected only if every class has the same support; "
                "pass supports= (or references=) to check_metrics to tell."
            )
        else:
            warnings.append(
                f"{a} == {b} == {scores[a]:.4f} although class supports differ "
                f"({min(supports)}..{max(supports)}): the averages were likely computed on the wrong "
                "labels, or one average was copied into both fields."
            )
    return warnings


def _degenerate(task: str, predictions: Sequence[Any], references: Sequence[Any] | None) -> list[str]:
    n = len(predictions)
    if n == 0:
        return [
            "NO PREDICTIONS: the prediction list is empty; nothing was generated or the wrong field was read."
        ]
    warnings: list[str] = []
    if references is not None and len(references) != n:
        warnings.append(
            f"{n} predictions but {len(references)} references: they are misaligned; every score is suspect."
        )
    texts = [p.strip() if isinstance(p, str) else p for p in predictions]
    empty = sum(1 for p in texts if p == "")
    if empty == n:
        warnings.append(
            f"ALL {n} PREDICTIONS ARE EMPTY STRINGS: generation produced nothing (EOS at once, "
            "max_new_tokens=0) or the decoded slice removed everything."
        )
    elif empty * 2 > n:
        warnings.append(f"{empty} of {n} predictions are empty strings: generation is mostly failing.")
    if n > 1 and empty < n and len(set(map(repr, texts))) == 1:
        what = "class" if task == "classification" else "text"
        warnings.append(
            f"ALL {n} PREDICTIONS ARE THE SAME {what.upper()} ({str(texts[0])[:60]!r}): the model collapsed "
            f"to one {what} (majority class, untrained head, or inputs not reaching the model)."
        )
    return warnings


def _copies_input(predictions: Sequence[Any], inputs: Sequence[Any]) -> list[str]:
    pairs = [
        (p.strip(), i.strip())
        for p, i in zip(predictions, inputs, strict=False)
        if isinstance(p, str) and isinstance(i, str) and i.strip()
    ]
    if not pairs:
        return []
    same = sum(1 for p, i in pairs if p == i)
    echoed = sum(1 for p, i in pairs if p != i and p.startswith(i))
    warnings = []
    if same * 2 >= len(pairs):
        warnings.append(
            f"{same} of {len(pairs)} predictions are identical to their input/prompt: the model copies "
            "its input, or the input column was scored as the prediction."
        )
    if echoed * 2 >= len(pairs):
        warnings.append(
            f"{echoed} of {len(pairs)} predictions start with their prompt: a decoder-only model's output "
            "includes the prompt; decode only the new tokens (output_ids[:, prompt_len:])."
        )
    return warnings


def check_metrics(
    metrics: dict[str, Any],
    *,
    task: str,
    predictions: list[Any] | None = None,
    references: list[Any] | None = None,
    supports: list[int] | None = None,
    inputs: list[Any] | None = None,
) -> list[str]:
    """Warnings (empty when all looks sound) for all-zero scores, distinct scores equal to 4 digits,
    empty/degenerate predictions and predictions that copy their inputs.

    `task` is "classification" or a generation task ("generation", "summarization", "qa",
    "translation"). `metrics` may carry HF Trainer prefixes ("eval_rouge1"). `supports` are the
    per-class test counts (derived from `references` when omitted) that decide whether weighted F1 ==
    macro F1 is expected. `inputs` are the prompts/source texts, aligned with `predictions`.
    """
    if task not in TASKS:
        raise LoralabError(
            f"unknown task {task!r} for check_metrics; choose one of {', '.join(sorted(TASKS))}"
        )
    scores = _scores(metrics)
    warnings = _all_zero(scores, task, references)
    warnings += _identical(scores, task, supports, references)
    if predictions is not None:
        warnings += _degenerate(task, predictions, references)
        if inputs is not None:
            warnings += _copies_input(predictions, inputs)
    return warnings
