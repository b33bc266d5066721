"""Generation metrics: Korean ROUGE that does not drop Hangul, checked by hand and against references."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import sacrebleu
from rouge_score.rouge_scorer import RougeScorer

from loralab.errors import LoralabError
from loralab.evaluate.generation import generation_metrics
from loralab.evaluate.tokenize_ko import CharTokenizer, MorphemeTokenizer, WhitespaceTokenizer

REF = "오늘 날씨가 좋다"
PRED = "오늘 날씨 좋다"


def korean_pairs(n: int = 12) -> tuple[list[str], list[str]]:
    """Real Korean sentences: (response, prompt) pairs of chatterbot-corpus's Korean dialogues, as
    extracted into examples/data (BSD-licensed; see examples/data/README.md)."""
    path = Path(__file__).parents[2] / "examples" / "data" / "korean-chat-test.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()][:n]
    return [r["response"] for r in rows], [r["prompt"] for r in rows]


def test_default_rouge_score_drops_hangul_and_ours_does_not() -> None:
    # huggingface/evaluate#256: the default tokenizer keeps [a-z0-9] only, so Korean scores 0 ...
    answers, _ = korean_pairs()
    default = RougeScorer(["rouge1", "rougeL"])
    assert default.score(REF, PRED)["rouge1"].fmeasure == 0.0
    assert default.score(answers[0], answers[0])["rouge1"].fmeasure == 0.0  # even a perfect copy
    # ... ours scores a perfect copy 1 and a partial overlap strictly between 0 and 1.
    same = generation_metrics(answers, answers)
    assert same["rouge1"] == pytest.approx(1.0)
    assert same["rougeL"] == pytest.approx(1.0)
    shifted = generation_metrics(answers, answers[1:] + answers[:1])
    assert 0.0 < shifted["rouge1"] < 1.0


def test_whitespace_by_hand() -> None:
    # ref tokens [오늘, 날씨가, 좋다]; pred tokens [오늘, 날씨, 좋다]
    assert WhitespaceTokenizer().tokenize(REF + ".") == ["오늘", "날씨가", "좋다"]
    m = generation_metrics([PRED], [REF], tokenizer="whitespace")
    # unigram overlap {오늘, 좋다} = 2: P = 2/3, R = 2/3, F = 2/3 = 0.6667
    assert m["rouge"]["rouge1"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3})
    # bigrams ref (오늘 날씨가)(날씨가 좋다), pred (오늘 날씨)(날씨 좋다): overlap 0
    assert m["rouge2"] == 0.0
    # LCS = [오늘, 좋다] = 2: P = R = F = 2/3
    assert m["rougeL"] == pytest.approx(2 / 3)
    assert m["rougeLsum"] == pytest.approx(2 / 3)  # one line, so Lsum == L
    assert (m["mean_pred_len"], m["mean_ref_len"], m["n"]) == (3, 3, 1)
    assert m["rouge_tokenizer"] == "whitespace"


def test_char_by_hand() -> None:
    # ref [오,늘,날,씨,가,좋,다] (7); pred [오,늘,날,씨,좋,다] (6)
    assert CharTokenizer().tokenize(REF) == ["오", "늘", "날", "씨", "가", "좋", "다"]
    m = generation_metrics([PRED], [REF], tokenizer="char")
    # unigram overlap 6: P = 6/6, R = 6/7, F = 2*1*(6/7)/(1+6/7) = 12/13 = 0.9231
    assert m["rouge"]["rouge1"] == pytest.approx({"precision": 1.0, "recall": 6 / 7, "f1": 12 / 13})
    # ref bigrams 오늘 늘날 날씨 씨가 가좋 좋다 (6); pred 오늘 늘날 날씨 씨좋 좋다 (5)
    # overlap {오늘, 늘날, 날씨, 좋다} = 4: P = 4/5, R = 4/6, F = 8/11 = 0.7273
    assert m["rouge"]["rouge2"] == pytest.approx({"precision": 0.8, "recall": 4 / 6, "f1": 8 / 11})
    # LCS = 오늘날씨좋다 = 6, same as ROUGE-1: F = 12/13
    assert m["rougeL"] == pytest.approx(12 / 13)
    assert (m["mean_pred_len"], m["mean_ref_len"]) == (6, 7)


def test_morpheme_by_hand() -> None:
    # Kiwi: ref [오늘, 날씨, 가, 좋, 다] (5); pred [오늘, 날씨, 좋, 다] (4)
    assert MorphemeTokenizer().tokenize(REF + "!") == ["오늘", "날씨", "가", "좋", "다"]
    m = generation_metrics([PRED], [REF], tokenizer="morpheme")
    # unigram overlap 4: P = 1, R = 4/5, F = 8/9 = 0.8889
    assert m["rouge"]["rouge1"] == pytest.approx({"precision": 1.0, "recall": 0.8, "f1": 8 / 9})
    # ref bigrams 오늘-날씨 날씨-가 가-좋 좋-다 (4); pred 오늘-날씨 날씨-좋 좋-다 (3); overlap 2
    # P = 2/3, R = 2/4, F = 4/7 = 0.5714
    assert m["rouge2"] == pytest.approx(4 / 7)
    # LCS = [오늘, 날씨, 좋, 다] = 4: F = 8/9
    assert m["rougeL"] == pytest.approx(8 / 9)
    assert m["rouge_tokenizer"] == "morpheme"


def test_auto_picks_by_script_and_kiwi(monkeypatch: pytest.MonkeyPatch) -> None:
    assert generation_metrics([PRED], [REF])["rouge_tokenizer"] == "morpheme"
    assert generation_metrics(["the cat"], ["a cat"])["rouge_tokenizer"] == "whitespace"
    monkeypatch.setitem(sys.modules, "kiwipiepy", None)  # as if kiwipiepy were not installed
    m = generation_metrics([PRED], [REF])
    assert m["rouge_tokenizer"] == "char"
    assert m["rouge1"] == pytest.approx(12 / 13)
    with pytest.raises(LoralabError, match="pip install kiwipiepy"):
        generation_metrics([PRED], [REF], tokenizer="morpheme")


def test_english_equals_rouge_score_defaults() -> None:
    preds = [
        "The cat sat on the mat.",
        "It ran away.\nA quick brown fox jumps over the lazy dog!",
        "LoRA adapters train 0.1% of the weights",
    ]
    refs = [
        "the cat was sitting on the mat",
        "The quick brown fox jumped over a lazy dog.\nThen it ran.",
        "LoRA trains low-rank adapters on 0.1% of weights, not all of them",
    ]
    ours = generation_metrics(preds, refs, tokenizer="whitespace")
    assert generation_metrics(preds, refs)["rouge_tokenizer"] == "whitespace"
    ref_scorer = RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=False)
    scores = [ref_scorer.score(r, p) for p, r in zip(preds, refs, strict=True)]
    for t in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert ours[t] == pytest.approx(sum(s[t].fmeasure for s in scores) / 3)
        assert ours["rouge"][t]["precision"] == pytest.approx(sum(s[t].precision for s in scores) / 3)
        assert ours["rouge"][t]["recall"] == pytest.approx(sum(s[t].recall for s in scores) / 3)
    assert ours["rougeLsum"] != pytest.approx(
        ours["rougeL"]
    )  # sentences in swapped order: LCS finds one, Lsum both


def test_bleu_and_chrf_equal_sacrebleu() -> None:
    preds, _ = korean_pairs()
    preds = preds[1:] + preds[:1]  # a worse but nonzero system: answers of neighbouring questions
    answers, _ = korean_pairs()
    m = generation_metrics(preds, answers)
    bleu = sacrebleu.corpus_bleu(preds, [answers], tokenize="char")
    chrf = sacrebleu.corpus_chrf(preds, [answers])
    assert m["bleu_tokenizer"] == "char"
    assert m["bleu_raw"] == pytest.approx(bleu.score)
    assert m["bleu"] == pytest.approx(bleu.score / 100)
    assert m["chrf"] == pytest.approx(chrf.score / 100)
    assert 0.0 < m["bleu"] < 1.0 and 0.0 < m["chrf"] < 1.0
    en = generation_metrics(["the cat sat on the mat"], ["the cat is on the mat"])
    assert en["bleu_tokenizer"] == "13a"
    assert en["bleu_raw"] == pytest.approx(
        sacrebleu.corpus_bleu(["the cat sat on the mat"], [["the cat is on the mat"]]).score
    )


def test_bad_inputs_are_loralab_errors() -> None:
    with pytest.raises(LoralabError, match="aligned"):
        generation_metrics(["a"], ["a", "b"])
    with pytest.raises(LoralabError, match="no predictions"):
        generation_metrics([], [])
    with pytest.raises(LoralabError, match="unknown ROUGE tokenizer"):
        generation_metrics(["a"], ["a"], tokenizer="mecab")
