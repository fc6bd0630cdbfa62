"""salmon-pair: principle-driven preferences (SALMON, Sun et al. 2023, "SALMON: Self-Alignment
with Instructable Reward Models", arXiv:2310.05910; the selection rules of the authors'
released code, github.com/IBM/SALMON).

For each prompt a subset of the principle set is drawn: its size from a geometric
distribution (p = 0.2) cut at `count` (or exactly `count`), the principles at random or in
proportion to their `weight`; each may be negated with probability `negate` (the paper's
trick that teaches the reward model to follow the principle text, not a fixed taste). The
judge compares the two responses by each drawn principle separately, in both orders: two
orders that favour the same response give the principle a score (P(first completion) - 0.5,
averaged over the orders), orders that disagree give 0. A negated principle flips its score.
The principle with the largest absolute score decides the pair; equal top scores that
disagree, or no score at all, drop it. The principles used are stored with the record and,
by default, written to its system message, so the exported pairs carry them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from synthaug.errors import ConfigError, RecordError
from synthaug.records import Record, content
from synthaug.steps.base import Each, EachOptions, Requirements, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.generate.sampling import load_data
from synthaug.steps.llm import Uses
from synthaug.steps.prefer.common import completions_of, prompt_text, settled, with_judgements
from synthaug.steps.prefer.rlaif import Label, Labeling, entries_of, label_pair, load_examples

CRITERIA = ("Compare the two responses by the one principle below and nothing else: the "
            "better response is the one that follows it more closely.")
GEOMETRIC_P = 0.2  # the released code draws the subset size from Geometric(0.2)


class Principle(BaseModel):
    """One principle of the set: what the judge reads, its opposite, its weight."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    definition: str = Field(min_length=1)
    negation: str | None = None
    weight: float = Field(1.0, gt=0)


def load_principles(name: str) -> list[Principle]:
    """The principle set of a YAML/JSON/JSONL file; ConfigError naming item and field."""
    items = load_data(name)
    if not isinstance(items, list) or not items:
        raise ConfigError("expected a non-empty list of principles", file=name)
    found = []
    for index, item in enumerate(items):
        try:
            found.append(Principle.model_validate(item))
        except ValidationError as exc:
            problems = ["{}: {}".format(".".join(map(str, e["loc"])) or "item", e["msg"])
                        for e in exc.errors()]
            where = ".".join(map(str, exc.errors()[0]["loc"]))
            raise ConfigError(f"principle {index + 1}: {'; '.join(problems)}", file=name,
                              field=where or None) from None
    if len({p.name for p in found}) != len(found):
        raise ConfigError("two principles share a name", file=name, field="name")
    return found


class SalmonOptions(EachOptions, Labeling):
    """Options of salmon-pair."""

    backend: str = "judge"
    prompt_field: str = "instruction"
    completions_field: str = "completions"
    criteria: str = CRITERIA
    principles: str = "salmon_principles.yaml"  # a file of {name, definition, negation, weight}
    count: int = Field(3, ge=1)  # principles per prompt (at most, with size: geometric)
    size: Literal["geometric", "fixed"] = "geometric"
    select: Literal["random", "weighted"] = "random"
    negate: float = Field(0.0, ge=0.0, le=1.0)  # chance a drawn principle is negated
    system_field: str | None = "system_message"  # where the principles used are written


@dataclass
class Scored:
    """A drawn principle, whether it is negated, and the judge's label under it."""

    principle: Principle
    negated: bool
    label: Label

    @property
    def score(self) -> float:
        """P(completion 0 better) - 0.5 when every order agrees on a side (0 otherwise),
        sign flipped for a negated principle."""
        votes = self.label.votes
        agreed = all(v > 0.5 for v in votes) or all(v < 0.5 for v in votes)
        value = self.label.p0 - 0.5 if agreed else 0.0
        return -value if self.negated else value

    @property
    def text(self) -> str:
        """The principle as it applies to this record (its negation when negated)."""
        return (self.principle.negation or "") if self.negated else self.principle.definition


class SalmonPair(Each[SalmonOptions]):
    """Judges a record's two completions by a subset of principles drawn for its prompt;
    writes chosen/rejected, `principles` (each with its score), `dominant_principle`,
    `preference_strength` and `judgements`."""

    Options: ClassVar[type[StepOptions]] = SalmonOptions

    def __init__(self, options: StepOptions | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self.principles = load_principles(self.options.principles)
        self.shots = load_examples(self.options.examples)

    def uses(self) -> list[Uses]:
        return [Uses(self.options.backend, logprobs=self.options.labels == "soft")]

    def requires(self) -> Requirements:
        return {self.options.prompt_field: str, self.options.completions_field: list}

    def provides(self) -> set[str]:
        o = self.options
        return {"chosen", "rejected", "chosen_model", "rejected_model", "principles",
                "dominant_principle", "preference_strength", "preference", "judgements",
                *((o.system_field,) if o.system_field else ())}

    def choose(self, record: Record, ctx: StepContext) -> list[tuple[Principle, bool]]:
        """The principles drawn for this record's prompt, each with whether it is negated."""
        o = self.options
        rng = ctx.rng(record, "principles")
        most = min(o.count, len(self.principles))
        size = most if o.size == "fixed" else rng.choices(
            range(1, most + 1), [GEOMETRIC_P * (1 - GEOMETRIC_P) ** k for k in range(most)])[0]
        left = list(self.principles)
        drawn = []
        for _ in range(size):
            weights = [p.weight if o.select == "weighted" else 1.0 for p in left]
            drawn.append(left.pop(rng.choices(range(len(left)), weights)[0]))
        return [(p, p.negation is not None and rng.random() < o.negate) for p in drawn]

    async def process(self, record: Record, ctx: StepContext) -> list[Record]:
        o = self.options
        items = completions_of(record, o.completions_field, 2)
        if len(items) != 2:
            raise RecordError(o.completions_field, f"SALMON compares a pair: found "
                                                   f"{len(items)} completions, need exactly 2")
        made: dict[str, Any] = {**content(record)}
        if items[0]["text"].strip() == items[1]["text"].strip():
            ctx.drop(ctx.derive([record], made, 0), "identical responses")
            return []
        instruction = prompt_text(record, o.prompt_field)
        drawn = self.choose(record, ctx)
        labels = await settled(*(
            label_pair(ctx, o, o.backend, record, self.shots, instruction,
                       (items[0]["text"], items[1]["text"]), p.name,
                       criteria=f"{o.criteria}\n\nPrinciple ({p.name}): {p.definition}")
            for p, _ in drawn))
        scored = [Scored(p, negated, label) for (p, negated), label in zip(drawn, labels,
                                                                          strict=True)]
        made.update(self._fields(record, scored, items))
        replies = [reply for s in scored for reply in s.label.replies]
        derived = ctx.derive([record], made, 0, *replies)
        why = _undecided(scored)
        if why:
            ctx.drop(derived, *why)
            return []
        top = max(scored, key=lambda s: abs(s.score))
        best = 0 if top.score > 0 else 1
        derived.update(chosen=items[best]["text"], rejected=items[1 - best]["text"],
                       chosen_model=items[best].get("model"),
                       rejected_model=items[1 - best].get("model"),
                       dominant_principle=top.principle.name,
                       preference_strength=round(0.5 + abs(top.score), 4))
        return [derived]

    def _fields(self, record: Record, scored: list[Scored],
                items: list[dict[str, Any]]) -> dict[str, Any]:
        """The principles used with their scores, the judgements, the system message."""
        o = self.options
        entries = []
        for s in scored:
            for entry in entries_of(s.label, items, s.label.replies[0].model):
                entries.append({**entry, "principle": s.principle.name})
        used = [{"name": s.principle.name, "text": s.text, "negated": s.negated,
                 "score": round(s.score, 4), "p_first_completion": round(s.label.p0, 4),
                 "orders": [{"shown": list(order.shown), "p_first_shown": order.p_first,
                             "rationale": order.rationale} for order in s.label.orders]}
                for s in scored]
        found: dict[str, Any] = {"principles": used, "judgements": with_judgements(
            record, entries), "preference": {"labels": o.labels}}
        if o.system_field:
            before = record.get(o.system_field)
            lines = "\n".join(f"- {s.text}" for s in scored)
            head = f"{before.strip()}\n\n" if isinstance(before, str) and before.strip() else ""
            found[o.system_field] = f"{head}Principles for the response:\n{lines}"
        return found


def _undecided(scored: list[Scored]) -> tuple[str, str] | None:
    """Why the drawn principles decide nothing (no score; top scores that disagree)."""
    scores = [s.score for s in scored]
    top = max(abs(v) for v in scores)
    if top == 0:
        return "no preference under the principles", ", ".join(s.principle.name
                                                                for s in scored)
    sides = {v > 0 for v in scores if abs(v) == top}
    if len(sides) > 1:
        return "principles disagree", ", ".join(
            f"{s.principle.name}: {s.score:+.2f}" for s in scored)
    return None
