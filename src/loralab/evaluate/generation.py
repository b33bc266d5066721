"""Generation metrics (seed 003's summarization, seed 004's QA): ROUGE, BLEU and chrF that score Korean.

ROUGE (Lin 2004, "ROUGE: A Package for Automatic Evaluation of Summaries") is computed by the
`rouge_score` package, the reference re-implementation, with a tokenizer from
`loralab.evaluate.tokenize_ko` so Hangul is not dropped (huggingface/evaluate#256). For each pair
rouge_score gives precision/recall/F1 of ROUGE-1/2 (n-gram overlap) and ROUGE-L (longest common
subsequence over the whole text); ROUGE-Lsum is summary-level LCS (Lin 2004 §3.2) over sentences,
and sentences are the text split on newlines ("\\n"), as rouge_score does with
``split_summaries=False``: put one sentence per line if you want ROUGE-Lsum to differ from ROUGE-L.
Corpus values are the unweighted mean over pairs (no bootstrap), on a [0, 1] scale.

BLEU (Papineni et al. 2002) and chrF (Popović 2015, beta=2, character 6-grams) are sacrebleu's
corpus-level scores. sacrebleu reports 0-100; ``bleu``/``chrf`` here are divided by 100 and the raw
numbers are kept as ``bleu_raw``/``chrf_raw``. For Hangul text BLEU uses sacrebleu's ``char``
tokenizer (every character a token) because ``ko-mecab`` needs the MeCab-ko binaries; pass
``bleu_tokenize`` to choose another. chrF is character-based and needs no tokenizer.
"""

from __future__ import annotations

from typing import Any

from loralab.errors import LoralabError
from loralab.evaluate.tokenize_ko import has_hangul, resolve_tokenizer

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def _rouge(predictions: list[str], references: list[str], tokenizer: Any) -> dict[str, dict[str, float]]:
    # optional extra (loralab[evaluate]); only generation scoring needs it
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(list(ROUGE_TYPES), use_stemmer=False, tokenizer=tokenizer)
    sums = {t: [0.0, 0.0, 0.0] for t in ROUGE_TYPES}
    for pred, ref in zip(predictions, references, strict=True):
        scores = scorer.score(ref, pred)  # rouge_score's order is (target, prediction)
        for t in ROUGE_TYPES:
            s = scores[t]
            sums[t][0] += s.precision
            sums[t][1] += s.recall
            sums[t][2] += s.fmeasure
    n = len(predictions)
    return {t: {"precision": p / n, "recall": r / n, "f1": f / n} for t, (p, r, f) in sums.items()}


def generation_metrics(
    predictions: list[str],
    references: list[str],
    *,
    tokenizer: str = "auto",
    bleu_tokenize: str | None = None,
) -> dict[str, Any]:
    """ROUGE-1/2/L/Lsum F1, BLEU, chrF (all in [0, 1]), mean lengths in tokens, n, tokenizer names.

    `tokenizer` is the ROUGE tokenizer: "whitespace", "char", "morpheme" (Kiwi) or "auto" (morpheme
    when kiwipiepy is installed and any text has Hangul, char for Hangul without it, else whitespace);
    see `loralab.evaluate.tokenize_ko` for the exact definitions. The result's ``rouge`` entry holds
    precision/recall/F1 of each ROUGE type; ``rouge_tokenizer`` and ``bleu_tokenizer`` say what ran.
    """
    # optional extra (loralab[evaluate]); only generation scoring needs it
    from sacrebleu.metrics import BLEU, CHRF

    if len(predictions) != len(references):
        raise LoralabError(
            f"{len(predictions)} predictions but {len(references)} references: they must be aligned 1:1"
        )
    if not predictions:
        raise LoralabError("no predictions to score")
    texts = [*predictions, *references]
    tok = resolve_tokenizer(tokenizer, texts)
    rouge = _rouge(predictions, references, tok)
    if bleu_tokenize is None:
        bleu_tokenize = "char" if any(has_hangul(t) for t in texts) else "13a"
    bleu = BLEU(tokenize=bleu_tokenize).corpus_score(predictions, [references])
    chrf = CHRF().corpus_score(predictions, [references])
    n = len(predictions)
    return {
        **{t: rouge[t]["f1"] for t in ROUGE_TYPES},
        "rouge": rouge,
        "bleu": bleu.score / 100.0,
        "bleu_raw": bleu.score,
        "chrf": chrf.score / 100.0,
        "chrf_raw": chrf.score,
        "mean_pred_len": sum(len(tok.tokenize(p)) for p in predictions) / n,
        "mean_ref_len": sum(len(tok.tokenize(r)) for r in references) / n,
        "n": n,
        "rouge_tokenizer": tok.name,
        "bleu_tokenizer": bleu_tokenize,
    }
