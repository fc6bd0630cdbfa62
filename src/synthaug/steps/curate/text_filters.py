"""Simple text filters: keywords and length, each drop counted by its reason."""

from __future__ import annotations

import re
from typing import ClassVar

from synthaug.records import Record
from synthaug.steps.base import Filter, StepOptions


class KeywordOptions(StepOptions):
    """Options of keyword-filter."""

    field: str = "text"
    words: list[str]
    ignore_case: bool = True


class KeywordFilter(Filter[KeywordOptions]):
    """Drops records whose `field` contains any of `words` as a whole word or phrase."""

    Options: ClassVar[type[StepOptions]] = KeywordOptions

    def __init__(self, options: StepOptions | None = None, **kwargs: object) -> None:
        super().__init__(options, **kwargs)
        flags = re.IGNORECASE if self.options.ignore_case else 0
        self._patterns = [(w, re.compile(rf"\b{re.escape(w)}\b", flags))
                          for w in self.options.words]

    def requires(self) -> set[str]:
        return {self.options.field}

    def keep(self, record: Record) -> bool | tuple[bool, str]:
        text = str(record.get(self.options.field, ""))
        for word, pattern in self._patterns:
            if pattern.search(text):
                return False, f"contains '{word}'"
        return True


class LengthOptions(StepOptions):
    """Options of length-filter (in words)."""

    field: str = "text"
    min_words: int = 0
    max_words: int | None = None


class LengthFilter(Filter[LengthOptions]):
    """Drops records whose `field` has fewer than `min_words` or more than `max_words` words."""

    Options: ClassVar[type[StepOptions]] = LengthOptions

    def requires(self) -> set[str]:
        return {self.options.field}

    def keep(self, record: Record) -> bool | tuple[bool, str]:
        words = len(str(record.get(self.options.field, "")).split())
        if words < self.options.min_words:
            return False, "too short"
        if self.options.max_words is not None and words > self.options.max_words:
            return False, "too long"
        return True
