"""check_metrics: each symptom of a broken evaluation (seeds 003, 004) warns; sound results do not."""

from __future__ import annotations

import pytest
from rouge_score.rouge_scorer import RougeScorer
from sklearn.metrics import f1_score

from loralab.errors import LoralabError
from loralab.evaluate.generation import generation_metrics
from loralab.evaluate.guards import check_metrics

REFS = ["오늘 날씨가 좋다", "내일은 비가 온다", "모델이 요약을 만든다"]
PREDS = ["오늘 날씨 좋다", "비가 내일 온다", "요약을 모델이 만든다"]  # some words reordered


def test_sound_generation_result_has_no_warning() -> None:
    m = generation_metrics(PREDS, REFS)
    assert check_metrics(m, task="summarization", predictions=PREDS, references=REFS, inputs=REFS) == []


def test_all_zero_from_hangul_dropping_tokenizer() -> None:
    # Seed 004's report: every score 0.000. Reproduce with rouge_score's default tokenizer on Korean.
    scorer = RougeScorer(["rouge1", "rouge2", "rougeL"])
    scores = [scorer.score(r, p) for p, r in zip(PREDS, REFS, strict=True)]
    m = {f"eval_{t}": sum(s[t].fmeasure for s in scores) / 3 for t in ("rouge1", "rouge2", "rougeL")}
    m |= {"eval_loss": 2.3, "eval_runtime": 10.0, "n": 3}
    assert set(m.values()) >= {0.0}
    (warning,) = check_metrics(m, task="summarization", predictions=PREDS, references=REFS)
    assert "ALL METRICS ARE ZERO" in warning
    assert "rouge1, rouge2, rougeL" in warning  # loss, runtime and counts are not scores
    assert "evaluate#256" in warning and "DO contain Hangul" in warning
    assert "wrong column" in warning and "empty" in warning and "misaligned" in warning


def test_all_zero_classification_names_label_causes() -> None:
    m = {"accuracy": 0.0, "weighted_f1": 0.0, "macro_f1": 0.0, "micro_f1": 0.0}
    (warning,) = check_metrics(m, task="classification")
    assert "ALL METRICS ARE ZERO" in warning and "misaligned" in warning and "id2label" in warning
    assert "Hangul" not in warning


def test_rouge1_equals_rougeL_warns() -> None:
    # Seed 003 (llama-3.2-korean-3b): ROUGE-1 0.1096, ROUGE-2 0.0735, ROUGE-L 0.1096.
    m = {"eval_rouge1": 0.1096, "eval_rouge2": 0.0735, "eval_rougeL": 0.10962, "eval_loss": 1.0}
    (warning,) = check_metrics(m, task="summarization")
    assert "rouge1 == rougeL == 0.1096" in warning
    assert "copy" in warning and "single tokens" in warning
    # rougeL == rougeLsum is expected for one-line summaries: no warning.
    assert check_metrics({"rouge1": 0.5, "rouge2": 0.2, "rougeL": 0.4, "rougeLsum": 0.4}, task="qa") == []


def test_weighted_equals_macro_with_equal_support_is_not_a_false_alarm() -> None:
    # Banking77-like: every class has the same support, so weighted F1 == macro F1 by definition.
    gold = [0] * 4 + [1] * 4 + [2] * 4
    pred = [0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 0, 2]
    weighted = f1_score(gold, pred, average="weighted")
    macro = f1_score(gold, pred, average="macro")
    assert weighted == pytest.approx(macro)
    m = {"accuracy": 0.75, "weighted_f1": weighted, "macro_f1": macro}
    assert check_metrics(m, task="classification", supports=[4, 4, 4]) == []
    assert check_metrics(m, task="classification", predictions=pred, references=gold) == []
    # Unequal supports with identical averages do warn; no supports at all asks for them.
    (unequal,) = check_metrics(m, task="classification", supports=[10, 4, 1])
    assert "supports differ (1..10)" in unequal
    (unknown,) = check_metrics(m, task="classification")
    assert "pass supports=" in unknown


def test_all_empty_predictions() -> None:
    warnings = check_metrics({"rouge1": 0.0}, task="generation", predictions=["", "  ", ""], references=REFS)
    assert any("ALL 3 PREDICTIONS ARE EMPTY" in w for w in warnings)
    assert any("ALL METRICS ARE ZERO" in w for w in warnings)
    mostly = check_metrics({}, task="generation", predictions=["", "", "x"], references=REFS)
    assert mostly == ["2 of 3 predictions are empty strings: generation is mostly failing."]
    (none,) = check_metrics({}, task="generation", predictions=[])
    assert "NO PREDICTIONS" in none


def test_identical_predictions_and_one_class() -> None:
    (text,) = check_metrics({}, task="generation", predictions=["요약", "요약", "요약"])
    assert "ALL 3 PREDICTIONS ARE THE SAME TEXT" in text
    (cls,) = check_metrics(
        {"accuracy": 0.4}, task="classification", predictions=[7] * 5, references=[7, 1, 2, 3, 4]
    )
    assert "SAME CLASS" in cls and "majority class" in cls
    assert check_metrics({}, task="classification", predictions=[7, 1], references=[7, 1]) == []


def test_misaligned_lengths() -> None:
    (w,) = check_metrics({}, task="generation", predictions=PREDS[:2], references=REFS)
    assert "2 predictions but 3 references" in w


def test_predictions_copy_or_echo_inputs() -> None:
    inputs = ["다음 글을 요약하라: 가", "다음 글을 요약하라: 나", "다음 글을 요약하라: 다"]
    (copied,) = check_metrics({}, task="summarization", predictions=list(inputs), inputs=inputs)
    assert "3 of 3 predictions are identical to their input" in copied
    echoed = [i + " 요약 결과" for i in inputs]
    (echo,) = check_metrics({}, task="summarization", predictions=echoed, inputs=inputs)
    assert "start with their prompt" in echo and "prompt_len" in echo


def test_unknown_task_is_an_error() -> None:
    with pytest.raises(LoralabError, match="unknown task"):
        check_metrics({}, task="ranking")
