"""rlaif-label: an AI labeler's preference between two responses (RLAIF, Lee et al. 2023,
arXiv:2309.00267), shared by OAIF's and SALMON's steps.

For one pair the labeler is asked twice, once in each order (`swap`), and the two preference
distributions are averaged, which cancels the labeler's taste for a position. With
`rationale` (chain of thought) it first explains the comparison, then gives its verdict.
`labels: hard` reads the verdict line ('Preferred: 1/2'), a 0/1 distribution per order;
`labels: soft` reads the probabilities the labeler gives the tokens '1' and '2' at its
one-token answer and normalizes them over the two (the paper's softmax over the two tokens;
the backend must return logprobs, and its top alternatives where it can: an OpenAI-compatible
server does; with the sampled token's logprob alone, P(other) = 1 - P(sampled)). The averaged
probability that the chosen response is better is kept as `preference_strength`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import Field

from synthaug.errors import ConfigError, ParseError, RecordError
from synthaug.records import Record, content
from synthaug.steps.base import Each, EachOptions, Requirements, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.generate.sampling import load_data
from synthaug.steps.llm import Reply, Sampling, Uses
from synthaug.steps.prefer.common import (
    JUDGE_SAMPLING,
    completions_of,
    judgement,
    prompt_text,
    settled,
    with_judgements,
)

DEFAULT_CRITERIA = (
    "A better response does what the request asks: it is helpful, correct and honest, and "
    "it refuses or steers away from anything harmful. Compare what the two responses say, "
    "not how long they are or which one comes first.")
_SYSTEM = ("You are a careful annotator: you read two responses to one request and say "
           "which is better.")
_ASK_DIGIT = "Which response is better? Answer with the single digit 1 or 2."
_PREFERRED = re.compile(r"\bpreferred\b\W{0,4}(?:response\s*)?([12])\b", re.IGNORECASE)
_BARE = re.compile(r"^\W{0,3}(?:response\s*)?([12])\W{0,3}$", re.IGNORECASE)
Message = dict[str, str]


class Labeling(StepOptions):
    """How the AI labeler is asked (options shared by rlaif-label, oaif and salmon)."""

    criteria: str = DEFAULT_CRITERIA  # the task's preamble: what makes a response better
    swap: bool = True  # ask in both orders and average (the paper's position-bias fix)
    labels: Literal["hard", "soft"] = "hard"  # soft: the verdict token's probability
    rationale: bool = True  # chain of thought before the verdict
    examples: str | None = None  # few-shot file (JSONL/YAML): instruction, response_1,
    # response_2, preferred (1 or 2), rationale
    min_strength: float = Field(0.5, ge=0.5, le=1.0)  # keep pairs preferred more than this
    judge_sampling: Sampling = JUDGE_SAMPLING
    verdict_sampling: Sampling = Sampling(temperature=0.0, max_tokens=1)  # soft verdicts


def load_examples(name: str | None) -> str:
    """The few-shot block built from the examples file ('' without one); ConfigError naming
    the file, item and field of a bad example."""
    if not name:
        return ""
    items = load_data(name)
    if not isinstance(items, list) or not items:
        raise ConfigError("expected a non-empty list of examples", file=name)
    shown = []
    for number, item in enumerate(items, start=1):
        where = f"example {number}"
        if not isinstance(item, dict):
            raise ConfigError(f"{where} is not an object", file=name)
        for key in ("instruction", "response_1", "response_2"):
            if not isinstance(item.get(key), str) or not item[key].strip():
                raise ConfigError(f"{where} needs a text", file=name, field=key)
        if item.get("preferred") not in (1, 2):
            raise ConfigError(f"{where}: must be 1 or 2, got {item.get('preferred')!r}",
                              file=name, field="preferred")
        why = item.get("rationale")
        if why is not None and not isinstance(why, str):
            raise ConfigError(f"{where}: must be a text", file=name, field="rationale")
        pair = _sample(item["instruction"], item["response_1"], item["response_2"])
        reasons = f"\nRationale: {why.strip()}" if why else ""
        shown.append(f"Example {number}\n{pair}{reasons}\nPreferred: {item['preferred']}")
    return "Examples of finished comparisons:\n\n" + "\n\n".join(shown) + "\n\n"


def _sample(instruction: str, first: str, second: str) -> str:
    return f"Request:\n{instruction}\n\nResponse 1:\n{first}\n\nResponse 2:\n{second}\n"


def comparison(o: Labeling, shots: str, instruction: str, first: str, second: str,
               criteria: str | None = None) -> list[Message]:
    """The labeler's first message for one order: preamble, examples, the pair, the ask."""
    if o.rationale:
        ask = ("Think it through first: explain in a few sentences how the two responses "
               "compare on the points above and which one is better."
               + ("" if o.labels == "soft" else
                  " Then finish with one line, 'Preferred: 1' or 'Preferred: 2'."))
    else:
        ask = _ASK_DIGIT if o.labels == "soft" else \
            "Answer with one line only: 'Preferred: 1' or 'Preferred: 2'."
    lead = "Now the comparison to make.\n\n" if shots else ""
    user = (f"{criteria if criteria is not None else o.criteria}\n\n{shots}{lead}"
            f"{_sample(instruction, first, second)}\n{ask}")
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": user}]


def hard_verdict(text: str) -> int:
    """1 or 2 from a 'Preferred: N' line (or a bare digit); ParseError if none or both."""
    said = set(_PREFERRED.findall(text))
    if not said:
        lines = [line for line in text.strip().splitlines() if line.strip()]
        said = {m.group(1) for line in lines[-1:] if (m := _BARE.match(line))}
    if len(said) != 1:
        problem = "no 'Preferred: 1/2'" if not said else "both responses preferred"
        raise ParseError(f"{problem} in the labeler's reply: {text[:80]!r}", raw=[text])
    return int(said.pop())


TOP = 5  # alternatives asked per token in soft mode (both digits are nearly always among them)


def soft_verdict(reply: Reply) -> tuple[int, float]:
    """(the digit answered, its probability) from a one-token answer with logprobs: the two
    digits' probabilities normalized over the two where the backend sent the alternatives,
    else the sampled digit's own probability."""
    completion = reply.completions[0]
    text = completion.text
    found = re.match(r" ?([12])(?!\d)", text)  # the digit must be the first token
    if found is None:
        raise ParseError(f"the labeler did not answer 1 or 2 first: {text[:40]!r}", raw=[text])
    digit = int(found.group(1))
    top = completion.top_logprobs[0] if completion.top_logprobs else {}
    mass = {d: sum(math.exp(lp) for token, lp in top.items() if token.strip() == str(d))
            for d in (1, 2)}
    if mass[digit] > 0:
        return digit, mass[digit] / (mass[1] + mass[2])
    if not completion.logprobs:
        raise ParseError("the labeler's backend returned no logprobs for the verdict",
                         raw=[text])
    return digit, min(1.0, math.exp(completion.logprobs[0]))


def reasons(said: str, reply: str) -> str:
    """The labeler's chain of thought; ParseError when it gave none (a verdict alone)."""
    why = said.strip()
    if len(why.split()) < 3:
        raise ParseError(f"the labeler gave no rationale: {reply[:80]!r}", raw=[reply])
    return why


@dataclass
class Order:
    """One order's verdict: P(the response shown first is better), and what it rests on."""

    shown: tuple[int, int]
    p_first: float
    rationale: str | None
    replies: list[Reply] = field(default_factory=list)


async def ask_order(ctx: StepContext, o: Labeling, role: str, key: Record, messages:
                    list[Message], shown: tuple[int, int], *salt: Any) -> Order:
    """The labeler's verdict on one order of a pair (one call; two for soft with reasons)."""
    seed = ctx.seed_for(key, "label", *salt, *shown)
    first = await ctx.generate(messages, o.judge_sampling if o.rationale or o.labels == "hard"
                               else o.verdict_sampling, role=role, seed=seed,
                               logprobs=o.labels == "soft" and not o.rationale,
                               top_logprobs=TOP if o.labels == "soft" and not o.rationale else 0)
    if o.labels == "hard":
        digit = hard_verdict(first.text)
        why = reasons(_PREFERRED.split(first.text)[0], first.text) if o.rationale else None
        return Order(shown, 1.0 if digit == 1 else 0.0, why, [first])
    if not o.rationale:
        digit, p = soft_verdict(first)
        return Order(shown, p if digit == 1 else 1.0 - p, None, [first])
    why = reasons(first.text, first.text)
    follow = [*messages, {"role": "assistant", "content": why},
              {"role": "user", "content": _ASK_DIGIT}]
    verdict = await ctx.generate(follow, o.verdict_sampling, role=role, seed=seed,
                                 logprobs=True, top_logprobs=TOP)
    digit, p = soft_verdict(verdict)
    return Order(shown, p if digit == 1 else 1.0 - p, why, [first, verdict])


@dataclass
class Label:
    """A pair's preference: P(completion 0 is better), averaged over the orders asked."""

    p0: float
    orders: list[Order]

    @property
    def votes(self) -> list[float]:
        """Each order's P(completion 0 is better): p_first as shown in order (0, 1),
        1 - p_first in order (1, 0)."""
        return [o.p_first if o.shown == (0, 1) else 1.0 - o.p_first for o in self.orders]

    @property
    def replies(self) -> list[Reply]:
        """Every labeler call made for the pair."""
        return [reply for order in self.orders for reply in order.replies]


async def label_pair(ctx: StepContext, o: Labeling, role: str, key: Record, shots: str,
                     instruction: str, texts: tuple[str, str], *salt: Any,
                     criteria: str | None = None) -> Label:
    """Both orders of the pair asked (one without `swap`), their distributions averaged."""
    shows = [(0, 1), (1, 0)] if o.swap else [(0, 1)]
    orders = await settled(*(
        ask_order(ctx, o, role, key, comparison(o, shots, instruction, texts[i], texts[j],
                                                criteria), (i, j), *salt)
        for i, j in shows))
    label = Label(0.5, list(orders))
    label.p0 = sum(label.votes) / len(label.votes)
    return label


def entries_of(label: Label, items: list[dict[str, Any]], judge: str) -> list[dict[str, Any]]:
    """One `judgements` entry per order asked (the bias report reads them)."""
    found = []
    for order in label.orders:
        first, second = (items[i] for i in order.shown)
        winner = None if order.p_first == 0.5 else (0 if order.p_first > 0.5 else 1)
        found.append(judgement("pair", judge, shown=list(order.shown), winner=winner,
                               p_first=round(order.p_first, 4),
                               lengths=[len(first["text"]), len(second["text"])],
                               models=[first.get("model"), second.get("model")]))
    return found


def pair_fields(label: Label, items: list[dict[str, Any]], labels: str) -> dict[str, Any]:
    """chosen/rejected (with models), `preference_strength` and the per-order detail."""
    best = 0 if label.p0 > 0.5 else 1
    chosen, rejected = items[best], items[1 - best]
    return {"chosen": chosen["text"], "rejected": rejected["text"],
            "chosen_model": chosen.get("model"), "rejected_model": rejected.get("model"),
            "preference_strength": round(max(label.p0, 1.0 - label.p0), 4),
            "preference": {"labels": labels, "p_first_completion": round(label.p0, 4),
                           "orders": [{"shown": list(order.shown),
                                       "p_first_shown": round(order.p_first, 4),
                                       "rationale": order.rationale}
                                      for order in label.orders]}}


def weak(label: Label, o: Labeling) -> tuple[str, str] | None:
    """Why a labelled pair is not kept (a tie across orders, a weak preference), or None."""
    strength = max(label.p0, 1.0 - label.p0)
    if strength <= 0.5:
        return "no preference across orders", f"P(first completion) = {label.p0:.3f}"
    if strength < o.min_strength:
        return "weak preference", f"strength {strength:.3f} < {o.min_strength}"
    return None


class RLAIFOptions(EachOptions, Labeling):
    """Options of rlaif-label."""

    backend: str = "labeler"
    prompt_field: str = "instruction"
    completions_field: str = "completions"


class RLAIFLabel(Each[RLAIFOptions]):
    """Labels a record's two completions with an AI labeler (both orders, averaged); writes
    chosen/rejected, their models, `preference_strength`, `preference` and `judgements`."""

    Options: ClassVar[type[StepOptions]] = RLAIFOptions

    def __init__(self, options: StepOptions | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self.shots = load_examples(self.options.examples)

    def uses(self) -> list[Uses]:
        return [Uses(self.options.backend, logprobs=self.options.labels == "soft")]

    def requires(self) -> Requirements:
        return {self.options.prompt_field: str, self.options.completions_field: list}

    def provides(self) -> set[str]:
        return {"chosen", "rejected", "chosen_model", "rejected_model", "preference",
                "preference_strength", "judgements"}

    async def process(self, record: Record, ctx: StepContext) -> list[Record]:
        o = self.options
        items = completions_of(record, o.completions_field, 2)
        if len(items) != 2:
            raise RecordError(o.completions_field, f"RLAIF labels a pair: found {len(items)} "
                                                   "completions, need exactly 2")
        made = {**content(record)}
        if items[0]["text"].strip() == items[1]["text"].strip():
            ctx.drop(ctx.derive([record], made, 0), "identical responses")
            return []
        label = await label_pair(ctx, o, o.backend, record, self.shots,
                                 prompt_text(record, o.prompt_field),
                                 (items[0]["text"], items[1]["text"]))
        judge = label.replies[0].model
        made["judgements"] = with_judgements(record, entries_of(label, items, judge))
        return keep_or_drop(ctx, record, made, label, items, o)


def keep_or_drop(ctx: StepContext, record: Record, made: Record, label: Label,
                 items: list[dict[str, Any]], o: Labeling, index: int | str = 0,
                 replies: tuple[Reply, ...] = ()) -> list[Record]:
    """The labelled pair as a record, or [] after dropping it (a tie across orders, a weak
    preference: the dropped row keeps `preference` and the judgements). `replies`: calls
    made before the labeler's (their provenance comes first)."""
    fields = pair_fields(label, items, o.labels)
    calls = (*replies, *label.replies)
    why = weak(label, o)
    if why:
        made["preference"] = fields["preference"]
        ctx.drop(ctx.derive([record], made, index, *calls), *why)
        return []
    return [ctx.derive([record], {**made, **fields}, index, *calls)]
