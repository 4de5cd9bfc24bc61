"""Text normalisation and tokenisation shared by the metrics, the stub judge and the RAG metrics.

Normalisation follows the SQuAD evaluation script (the convention most QA numbers are reported
with), plus Unicode NFKC so that full-width digits and ligatures compare equal:
lower-case, drop punctuation, drop the English articles "a", "an", "the", collapse whitespace.
"""

from __future__ import annotations

import re
import string
import unicodedata

_PUNCTUATION = set(string.punctuation) | {"“", "”", "‘", "’", "«", "»", "…", "–", "—"}
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_WHITESPACE = re.compile(r"\s+")
_WORD = re.compile(r"\w+", re.UNICODE)

# A small English stop-word list: words that carry no content when checking lexical support.
STOPWORDS = frozenset(
    """a an the and or but if of to in on at by for with from as is are was were be been being it its
    this that these those there here what which who whom whose when where why how do does did done
    has have had not no so than then too very can could should would may might will shall must i you
    he she we they me him her us them my your his our their into over under about also just only""".split()
)


def normalize_answer(text: str) -> str:
    """SQuAD-style normalisation (see the module docstring).

    Example:
        >>> normalize_answer("  The Eiffel-Tower!  ")
        'eiffeltower'
    """
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return _WHITESPACE.sub(" ", text).strip()


def tokens(text: str) -> list[str]:
    """Tokens of the normalised text (whitespace split after :func:`normalize_answer`)."""
    normalised = normalize_answer(text)
    return normalised.split() if normalised else []


def content_words(text: str) -> list[str]:
    """Lower-cased word tokens that are not stop words (used for lexical support)."""
    return [w for w in _WORD.findall(unicodedata.normalize("NFKC", text).lower()) if w not in STOPWORDS]


_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")


def split_statements(text: str) -> list[str]:
    """Split an answer into statements: sentences ending in . ! ? or line breaks; blanks dropped."""
    return [part.strip() for part in _SENTENCE_SPLIT.split(text) if part and part.strip()]
