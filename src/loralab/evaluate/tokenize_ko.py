"""ROUGE tokenizers that keep Korean, for `rouge_score.rouge_scorer.RougeScorer(tokenizer=...)`.

Why this exists: `rouge_score`'s default tokenizer lowercases, replaces everything outside
``[a-z0-9]`` with a space and drops what is left, so Hangul vanishes and every Korean pair scores
0 (huggingface/evaluate#256; seed 004 printed all-zero scores and seed 003 reported ROUGE-1 ==
ROUGE-L, both consistent with the text being dropped). Each class here has the one method
`RougeScorer` calls, ``tokenize(text) -> list[str]``.

Definitions (the hand-computed tests in tests/evaluate/test_evaluate_generation.py follow them):

- ``whitespace``: lowercase; every run of characters that is not a Unicode letter or digit
  (punctuation, symbols, underscore, whitespace) becomes a separator; the pieces are the tokens.
  On ASCII text this equals rouge_score's default tokenizer without stemming; unlike it, Hangul,
  accented Latin, CJK and other scripts are kept. "오늘 날씨가 좋다." -> [오늘, 날씨가, 좋다].
- ``char``: the ``whitespace`` tokens, each split into its characters and concatenated, so a
  token is one character (a Korean syllable block) and word boundaries are not tokens: bigrams
  run across spaces. "오늘 날씨" -> [오, 늘, 날, 씨]. Latin words are split into letters too.
- ``morpheme``: the morphemes of Kiwi (`kiwipiepy`, a maintained Korean morphological analyzer on
  PyPI), lowercased, with punctuation/symbol tags (SF, SP, SS, SSO, SSC, SE, SO, SW, SB) dropped.
  "오늘 날씨가 좋다" -> [오늘, 날씨, 가, 좋, 다]. Kiwi's model is loaded once per process (~3 s).
"""

from __future__ import annotations

import importlib.util
import re
from typing import Any, Protocol

from loralab.errors import LoralabError

# Hangul syllables, Hangul Jamo, compatibility Jamo, Jamo extended-A/B.
HANGUL_RE = re.compile("[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f\ua960-\ua97f\ud7b0-\ud7ff]")
# "Not a letter or digit": \W is everything but [letters, digits, underscore]; add underscore.
_SEPARATOR_RE = re.compile(r"[\W_]+")
# Kiwi part-of-speech tags for punctuation and symbols (Sejong tag set as extended by Kiwi).
_PUNCT_TAGS = frozenset({"SF", "SP", "SS", "SSO", "SSC", "SE", "SO", "SW", "SB"})

TOKENIZERS = ("whitespace", "char", "morpheme", "auto")
_KIWI: dict[str, Any] = {}


class RougeTokenizer(Protocol):
    name: str

    def tokenize(self, text: str) -> list[str]: ...


def has_hangul(text: str) -> bool:
    return HANGUL_RE.search(text) is not None


def kiwi_available() -> bool:
    try:
        return importlib.util.find_spec("kiwipiepy") is not None
    except (ImportError, ValueError):
        return False


class WhitespaceTokenizer:
    """Lowercased letter/digit runs (see the module docstring); Hangul is kept."""

    name = "whitespace"

    def tokenize(self, text: str) -> list[str]:
        return [t for t in _SEPARATOR_RE.split(text.lower()) if t]


class CharTokenizer:
    """Every character of every `whitespace` token; spaces and punctuation are not tokens."""

    name = "char"

    def tokenize(self, text: str) -> list[str]:
        return [c for word in WhitespaceTokenizer().tokenize(text) for c in word]


class MorphemeTokenizer:
    """Kiwi morphemes without punctuation; raises LoralabError when kiwipiepy is not installed."""

    name = "morpheme"

    def __init__(self) -> None:
        try:
            import kiwipiepy  # imported here, first, so a missing package is reported every time
        except ImportError as exc:
            raise LoralabError(
                "the 'morpheme' ROUGE tokenizer needs the Korean morphological analyzer Kiwi: "
                "pip install kiwipiepy (or use tokenizer='char')"
            ) from exc
        if "kiwi" not in _KIWI:
            _KIWI["kiwi"] = kiwipiepy.Kiwi()
        self._kiwi = _KIWI["kiwi"]

    def tokenize(self, text: str) -> list[str]:
        if not text.strip():
            return []
        return [t.form.lower() for t in self._kiwi.tokenize(text) if t.tag not in _PUNCT_TAGS]


def resolve_tokenizer(name: str, texts: list[str]) -> RougeTokenizer:
    """The tokenizer called `name`; "auto" looks at `texts` (morpheme > char for Hangul, else whitespace)."""
    if name not in TOKENIZERS:
        raise LoralabError(f"unknown ROUGE tokenizer {name!r}; choose one of {', '.join(TOKENIZERS)}")
    if name == "auto":
        if any(has_hangul(t) for t in texts):
            name = "morpheme" if kiwi_available() else "char"
        else:
            name = "whitespace"
    if name == "whitespace":
        return WhitespaceTokenizer()
    if name == "char":
        return CharTokenizer()
    return MorphemeTokenizer()
