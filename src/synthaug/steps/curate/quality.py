"""Heuristic quality filters, each drop counted by its reason: repetition, language,
refusals, non-printable characters, and a numeric threshold on a score field."""

from __future__ import annotations

import unicodedata
from collections import Counter
from functools import cache
from typing import Any, ClassVar, TypeVar

from synthaug.errors import MissingDependency
from synthaug.records import Record
from synthaug.steps.base import Filter, Requirements, StepOptions
from synthaug.steps.curate.textkey import TEXTLIKE, record_text


class FieldsOptions(StepOptions):
    """Which fields a filter reads (joined by newlines)."""

    fields: list[str] = ["text"]


FieldsT = TypeVar("FieldsT", bound=FieldsOptions)


class _FieldsFilter(Filter[FieldsT]):
    Options: ClassVar[type[StepOptions]] = FieldsOptions

    def requires(self) -> Requirements:
        return dict.fromkeys(self.options.fields, TEXTLIKE)

    def text(self, record: Record) -> str:
        return record_text(record, self.options.fields)


class RepetitionOptions(FieldsOptions):
    """Gopher-style repetition limits (Rae et al., 2021)."""

    max_duplicate_line_fraction: float = 0.3
    max_top_2gram_fraction: float = 0.2
    max_duplicate_5gram_fraction: float = 0.15


def _ngram_char_fraction(tokens: list[str], n: int, top_only: bool) -> float:
    """Share of characters covered by the most frequent n-gram, or by any repeated n-gram."""
    grams = list(zip(*(tokens[i:] for i in range(n)), strict=False))
    if not grams:
        return 0.0
    counts = Counter(grams)
    total = sum(len(t) for t in tokens) or 1
    if top_only:
        gram, count = counts.most_common(1)[0]
        return count * sum(len(t) for t in gram) / total if count > 1 else 0.0
    covered = [False] * len(tokens)
    for i, gram in enumerate(grams):
        if counts[gram] > 1:
            for j in range(i, i + n):
                covered[j] = True
    return sum(len(t) for t, c in zip(tokens, covered, strict=True) if c) / total


class RepetitionFilter(_FieldsFilter[RepetitionOptions]):
    """Drops texts with many repeated lines or n-grams (degenerate generations)."""

    Options: ClassVar[type[StepOptions]] = RepetitionOptions

    def keep(self, record: Record) -> bool | tuple[bool, str]:
        o = self.options
        text = self.text(record)
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if lines and 1 - len(set(lines)) / len(lines) > o.max_duplicate_line_fraction:
            return False, "repeated lines"
        tokens = text.split()
        if _ngram_char_fraction(tokens, 2, True) > o.max_top_2gram_fraction:
            return False, "repeated 2-gram"
        if _ngram_char_fraction(tokens, 5, False) > o.max_duplicate_5gram_fraction:
            return False, "repeated 5-grams"
        return True


class LanguageOptions(FieldsOptions):
    """Languages to keep (ISO 639-1) and the least confidence required."""

    languages: list[str] = ["en"]
    min_confidence: float = 0.5


@cache
def _identifier() -> Any:
    try:
        from py3langid import langid
    except ImportError:
        raise MissingDependency("py3langid", "language-filter", "curate") from None
    return langid.LanguageIdentifier.from_model_file(langid.MODEL_FILE, norm_probs=True)


def detect_language(text: str) -> tuple[str, float]:
    """(ISO code, probability) from py3langid's offline model."""
    language, probability = _identifier().classify(text)
    return str(language), float(probability)


class LanguageFilter(_FieldsFilter[LanguageOptions]):
    """Keeps texts detected (py3langid) as one of `languages` with enough confidence."""

    Options: ClassVar[type[StepOptions]] = LanguageOptions

    def keep(self, record: Record) -> bool | tuple[bool, str]:
        o = self.options
        language, probability = detect_language(self.text(record))
        if language not in o.languages:
            return False, f"language {language}"
        if probability < o.min_confidence:
            return False, "language uncertain"
        return True


REFUSALS = ("as an ai language model", "as a large language model", "as an ai assistant",
            "i'm sorry, but i can't", "i am sorry, but i cannot", "i cannot help with",
            "i can't assist with", "i'm unable to help", "i am unable to provide",
            "i cannot provide", "i'm not able to provide", "i cannot fulfill")


class RefusalOptions(FieldsOptions):
    """Phrases that mark a refusal or a model talking about itself."""

    phrases: list[str] = list(REFUSALS)


class RefusalFilter(_FieldsFilter[RefusalOptions]):
    """Drops texts containing refusal phrases ("As an AI language model ...")."""

    Options: ClassVar[type[StepOptions]] = RefusalOptions

    def keep(self, record: Record) -> bool | tuple[bool, str]:
        lowered = " ".join(self.text(record).lower().replace("’", "'").split())
        for phrase in self.options.phrases:
            if phrase in lowered:
                return False, "refusal"
        return True


class NonPrintableOptions(FieldsOptions):
    """Largest share of control/format/unassigned characters allowed."""

    max_ratio: float = 0.01


def non_printable_ratio(text: str) -> float:
    """Share of characters in Unicode categories Cc, Cf, Co, Cn (tab and newline allowed)."""
    if not text:
        return 0.0
    bad = sum(1 for ch in text if ch not in "\n\t\r" and unicodedata.category(ch)
              in ("Cc", "Cf", "Co", "Cn"))
    return bad / len(text)


class NonPrintableFilter(_FieldsFilter[NonPrintableOptions]):
    """Drops texts with too many non-printable characters (broken encodings, binary)."""

    Options: ClassVar[type[StepOptions]] = NonPrintableOptions

    def keep(self, record: Record) -> bool | tuple[bool, str]:
        if non_printable_ratio(self.text(record)) > self.options.max_ratio:
            return False, "non-printable characters"
        return True


class ScoreOptions(StepOptions):
    """A numeric field and the range to keep."""

    field: str = "score"
    min: float | None = None
    max: float | None = None


class ScoreFilter(Filter[ScoreOptions]):
    """Keeps records whose numeric `field` lies in [min, max]; the score stays in the record."""

    Options: ClassVar[type[StepOptions]] = ScoreOptions

    def requires(self) -> Requirements:
        return {self.options.field: (int, float, str, type(None))}

    def keep(self, record: Record) -> bool | tuple[bool, str]:
        o = self.options
        value = record.get(o.field)
        if not isinstance(value, int | float):
            return False, f"no numeric {o.field}"
        if o.min is not None and value < o.min:
            return False, f"{o.field} < {o.min:g}"
        if o.max is not None and value > o.max:
            return False, f"{o.field} > {o.max:g}"
        return True
