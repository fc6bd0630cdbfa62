"""Text helpers shared by curation steps: which fields to read, normalization, shingles."""

from __future__ import annotations

import re
import unicodedata

from synthaug.records import Record

_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)


# the types a text field of a dataset under curation may hold (lists: chat `messages`)
TEXTLIKE: tuple[type, ...] = (str, list, dict)


def record_text(record: Record, fields: list[str]) -> str:
    """The named fields of a record joined by newlines (missing fields read as empty)."""
    return "\n".join(str(record.get(name, "")) for name in fields)


def normalize(text: str) -> str:
    """Lowercase, NFKC, punctuation removed, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(_PUNCT.sub(" ", text).split())


def words(text: str) -> list[str]:
    """Normalized words."""
    return normalize(text).split()


def shingles(text: str, size: int) -> list[str]:
    """Word `size`-grams of the normalized text (the whole text if it is shorter)."""
    tokens = words(text)
    if len(tokens) <= size:
        return [" ".join(tokens)] if tokens else []
    return list(map(" ".join, zip(*(tokens[i:] for i in range(size)), strict=False)))
