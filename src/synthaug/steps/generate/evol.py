"""Evol-Instruct (Xu et al., 2023, WizardLM): evolve instructions over M rounds.

Each round rewrites every surviving instruction with one operation — in-depth (add
constraints, deepen, concretize, increase reasoning steps, complicate the input) or
in-breadth (a new, rarer instruction in the same domain) — answers it, and eliminates failed
evolutions: no information gain over the parent, a response signalling failure ("sorry" in a
short reply), a prompt copying the rewriting instructions' words, or only punctuation and stop
words. A failed instruction stays in the pool for the next round, as in the paper. Variants:
`code` (WizardCoder, Luo et al., 2024) and `math` (WizardMath, Luo et al., 2023).
"""

from __future__ import annotations

import asyncio
import re
from typing import ClassVar, Literal

from synthaug.errors import RecordError
from synthaug.records import Record, content
from synthaug.steps.base import Requirements, Rounds, RoundsOptions, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.generate.similarity import RougePool
from synthaug.steps.llm import Sampling, Uses
from synthaug.template import text_field

_DEPTH_HEAD = ("Rewrite the instruction below into a harder version that a capable AI model "
               "would find more demanding, while a person can still understand and answer it. "
               "Keep any input it contains. The rewritten instruction may add at most 10 to 20 "
               "words. {how}\n\n#Original Instruction#:\n{instruction}\n\n"
               "#Rewritten Instruction#:\n")
_BREADTH_HEAD = ("Write a brand-new instruction inspired by the one below: same domain, but a "
                 "rarer topic or task, of similar length and difficulty.\n\n"
                 "#Original Instruction#:\n{instruction}\n\n#Created Instruction#:\n")

OPERATIONS: dict[str, dict[str, str]] = {
    "general": {
        "add_constraints": "Add one more constraint or requirement to it.",
        "deepen": "If it asks about a matter, widen and deepen how far the question goes.",
        "concretize": "Replace general concepts with more specific ones.",
        "increase_reasoning": "If it can be solved in a few simple steps, make it explicitly "
                              "require multi-step reasoning.",
        "complicate_input": "Add a more complex input the instruction must work on (a table, "
                            "code, or a longer passage).",
        "breadth": "",
    },
    "code": {
        "add_constraints": "Add new constraints and requirements, about 10 more words.",
        "rarer_requirement": "Replace a common requirement with a less common, more specific "
                             "one.",
        "increase_reasoning": "If it can be solved with a few logical steps, add more "
                              "reasoning steps.",
        "erroneous_reference": "Add a piece of erroneous code as a reference to increase "
                               "misdirection; the task must include fixing or avoiding it.",
        "complexity": "Require higher time or space complexity bounds (use this sparingly).",
        "breadth": "",
    },
    "math": {
        "add_constraints": "Add one more constraint or condition to the problem.",
        "deepen": "Make the problem need deeper mathematical understanding.",
        "concretize": "Replace general quantities or concepts with specific ones.",
        "increase_reasoning": "Make the problem require more solution steps.",
        "downward": "Make the problem easier (downward evolution), keeping it well posed.",
        "breadth": "",
    },
}
PROMPT_WORDS = ("#original instruction#", "#rewritten instruction#", "#created instruction#",
                "original instruction", "rewritten instruction", "created instruction")
STOP_WORDS = frozenset([
    "a", "an", "the", "and", "or", "but", "if", "then", "of", "to", "in", "on", "at", "by",
    "for", "with", "about", "as", "is", "are", "was", "were", "be", "been", "it", "this",
    "that", "these", "those", "i", "you", "he", "she", "we", "they", "me", "my", "your",
    "our", "their", "what", "which", "who", "how", "why", "when", "where", "do", "does",
    "did", "not", "no", "so",
])


def eliminate(evolved: str, parent: str, response: str, pool: RougePool | None = None,
              same_threshold: float = 0.9) -> str | None:
    """Why an evolution failed, or None: the paper's four elimination rules."""
    lowered = evolved.lower()
    if any(word in lowered for word in PROMPT_WORDS):
        return "copies the rewriting prompt"
    words = re.findall(r"[a-z0-9']+", lowered)
    if not words or all(w in STOP_WORDS for w in words):
        return "only punctuation and stop words"
    check = pool or RougePool([parent])
    if " ".join(evolved.split()).lower() == " ".join(parent.split()).lower() or \
            check.most_similar(evolved)[0] >= same_threshold:
        return "no information gain"
    answer = response.lower()
    if "sorry" in answer and len(response.split()) < 80:
        return "response signals failure"
    if len(response.split()) < 3:
        return "response too short"
    return None


class EvolOptions(RoundsOptions):
    """Options of evol-instruct."""

    backend: str = "default"
    rounds: int = 4
    variant: Literal["general", "code", "math"] = "general"
    operations: list[str] | None = None  # default: every operation of the variant
    same_threshold: float = 0.9  # ROUGE-L with the parent at or above which nothing was gained
    sampling: Sampling = Sampling(max_tokens=384)  # the rewriting call
    response_sampling: Sampling = Sampling(max_tokens=512)  # answering the evolved instruction
    instruction_field: str = "instruction"


class EvolInstruct(Rounds[EvolOptions]):
    """Evolves each instruction once per round; emits survivors with their lineage."""

    Options: ClassVar[type[StepOptions]] = EvolOptions

    def requires(self) -> Requirements:
        return {self.options.instruction_field: str}

    def provides(self) -> set[str]:
        return {"instruction", "response", "evolution", "round"}

    def uses(self) -> list[Uses]:
        return [Uses(self.options.backend)]

    async def start(self, pool: list[Record], ctx: StepContext) -> None:
        field = self.options.instruction_field
        self.current: list[Record] = []
        for record in pool:
            try:
                text = text_field(record, field)
            except RecordError as exc:
                ctx.reject(record, exc.reason, exc.field)
                continue
            self.current.append({**record, "instruction": text, "evolution": []})

    def _operation(self, record: Record, index: int, ctx: StepContext) -> str:
        names = self.options.operations or list(OPERATIONS[self.options.variant])
        return ctx.rng(record, "op", index).choice(names)

    async def _evolve(self, record: Record, index: int, ctx: StepContext) -> Record | None:
        o = self.options
        op = self._operation(record, index, ctx)
        how = OPERATIONS[o.variant][op]
        parent = str(record["instruction"])
        ask = _BREADTH_HEAD.format(instruction=parent) if op == "breadth" else \
            _DEPTH_HEAD.format(how=how, instruction=parent)
        seed = ctx.seed_for(record, "evolve", index)
        evolved = await ctx.generate([{"role": "user", "content": ask}], o.sampling, seed=seed)
        text = evolved.text.strip()
        answer = await ctx.generate([{"role": "user", "content": text or "-"}],
                                    o.response_sampling, seed=ctx.seed_for(record, "answer", index))
        child = ctx.derive([record], {**content(record), "instruction": text,
                                      "response": answer.text, "round": index,
                                      "evolution": [*record["evolution"], op],
                                      "parent_instruction": parent}, index, evolved, answer)
        reason = eliminate(text, parent, answer.text, same_threshold=o.same_threshold)
        if reason:
            ctx.drop(child, reason, f"{op} in round {index}")
            return None
        return child

    async def round(self, index: int, ctx: StepContext) -> tuple[list[Record], bool]:
        evolved = await asyncio.gather(*(ctx.attempt(self._evolve(r, index, ctx), r)
                                         for r in self.current))
        survivors = [e for e in evolved if e is not None]
        ctx.stats.notes[f"round {index} survivors"] = len(survivors)
        # a failed instruction stays in the pool for the next round
        self.current = [e if e is not None else r
                        for e, r in zip(evolved, self.current, strict=True)]
        return survivors, not self.current
