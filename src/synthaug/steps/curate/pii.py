"""PII detection and redaction with Presidio's pattern recognizers (offline, no NLP model).

Emails, phone numbers, credit cards (Luhn-checked), IP addresses, URLs, IBANs and US SSNs are
replaced by `<TYPE>` placeholders; counts by type go to `_meta.pii` and the step's notes.
Names and addresses need an NLP model, which this offline build does not load.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from functools import cache
from typing import Any, ClassVar

from synthaug.errors import MissingDependency
from synthaug.records import Record, meta
from synthaug.steps.base import Map, Requirements, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.curate.textkey import TEXTLIKE

ENTITIES = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IP_ADDRESS", "URL", "IBAN_CODE",
            "US_SSN")


class PIIOptions(StepOptions):
    """Options of pii-redact."""

    fields: list[str] = ["text"]
    entities: list[str] = list(ENTITIES)
    min_score: float = 0.4  # pattern scores without NLP context: phone 0.4, URL 0.5-0.6


@cache
def _recognizers() -> list[Any]:
    try:
        import tldextract
        from presidio_analyzer import predefined_recognizers as pr
    except ImportError:
        raise MissingDependency("presidio-analyzer", "pii-redact", "curate") from None
    # Presidio validates e-mail domains with tldextract; use its bundled suffix snapshot
    # instead of fetching the list over the network.
    tldextract.extract = tldextract.TLDExtract(  # type: ignore[assignment]
        suffix_list_urls=(), cache_dir=None)
    return [pr.EmailRecognizer(), pr.PhoneRecognizer(), pr.CreditCardRecognizer(),
            pr.IpRecognizer(), pr.UrlRecognizer(), pr.IbanRecognizer(), pr.UsSsnRecognizer()]


def find_pii(text: str, entities: list[str], min_score: float) -> list[tuple[int, int, str]]:
    """Non-overlapping (start, end, type) spans, higher scores and longer spans first."""
    found = []
    for recognizer in _recognizers():
        wanted = [e for e in recognizer.supported_entities if e in entities]
        if wanted:
            found += [r for r in recognizer.analyze(text, wanted, None) if r.score >= min_score]
    found.sort(key=lambda r: (-r.score, -(r.end - r.start)))
    spans: list[tuple[int, int, str]] = []
    for r in found:
        if all(r.end <= s or r.start >= e for s, e, _ in spans):
            spans.append((r.start, r.end, r.entity_type))
    return sorted(spans)


def redact(text: str, spans: list[tuple[int, int, str]]) -> str:
    """`text` with each span replaced by `<TYPE>`."""
    for start, end, kind in sorted(spans, reverse=True):
        text = text[:start] + f"<{kind}>" + text[end:]
    return text


class PIIRedact(Map[PIIOptions]):
    """Replaces PII in the given fields and reports what was redacted, by type."""

    Options: ClassVar[type[StepOptions]] = PIIOptions

    def requires(self) -> Requirements:
        return dict.fromkeys(self.options.fields, TEXTLIKE)

    def apply(self, record: Record, ctx: StepContext) -> Iterable[Record]:
        o = self.options
        out, counts = dict(record), Counter[str]()
        for field in o.fields:
            value = record.get(field)
            if isinstance(value, str):
                spans = find_pii(value, o.entities, o.min_score)
                counts.update(kind for _, _, kind in spans)
                out[field] = redact(value, spans)
        out["_meta"] = {**meta(record), "pii": dict(counts)}
        yield out
