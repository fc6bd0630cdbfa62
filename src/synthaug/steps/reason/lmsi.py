"""Self-consistency self-improvement data (LMSI; Huang et al., 2022, arXiv:2210.11610).

No gold label is read. For each unlabeled question, sample m chain-of-thought paths with a
few-shot prompt (temperature 0.7), vote over their final answers (self-consistency) and keep
the paths that reach the majority answer — the "high-confidence" ones; a question whose
majority holds less than `min_agreement` of the paths is dropped. Each kept path becomes
training examples in the paper's mixed formats: the question with chain-of-thought exemplars
(answer: the path), with direct-answer exemplars (answer: the majority answer alone), with
"Let's think step by step." and no exemplars (the path), and bare (the answer alone).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal, cast

from pydantic import Field

from synthaug.records import Record
from synthaug.steps.base import Each, EachOptions, Requirements, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.llm import Reply, Sampling, Uses
from synthaug.steps.reason.common import cot_shots, question_of, solve_prompt
from synthaug.verify.answers import equivalent, extract_answer

Format = Literal["cot", "direct", "zero-shot-cot", "direct-zero-shot"]
FORMATS: tuple[Format, ...] = ("cot", "direct", "zero-shot-cot", "direct-zero-shot")
STEP_BY_STEP = "Let's think step by step."
DIRECT_INSTRUCTION = "Answer the problem with one line of the form 'The answer is N.'"


@dataclass
class Vote:
    """The outcome of self-consistency over one question's paths."""

    answer: str | None  # the majority answer as the first path that reached it wrote it;
    # None when no path states an answer or the top answers tie
    majority: list[int]  # indexes of the paths that reach it
    minority: list[int]
    unanswered: list[int]
    counts: dict[str, int]

    def agreement(self, total: int) -> float:
        """The share of all sampled paths that reach the majority answer."""
        return len(self.majority) / total if total else 0.0


def vote(texts: list[str]) -> Vote:
    """Majority vote over the final answers of `texts` (equivalent answers count together);
    no answer wins a tie."""
    groups: list[tuple[str, list[int]]] = []
    unanswered = []
    for index, text in enumerate(texts):
        answer = extract_answer(text)
        if answer is None:
            unanswered.append(index)
            continue
        for written, members in groups:
            if equivalent(answer, written):
                members.append(index)
                break
        else:
            groups.append((answer, [index]))
    counts = {written: len(members) for written, members in groups}
    top = max(counts.values(), default=0)
    leaders = [group for group in groups if len(group[1]) == top]
    if len(leaders) != 1:  # no answer, or a tie: no most consistent answer
        return Vote(None, [], sorted(i for _, m in groups for i in m), unanswered, counts)
    best = leaders[0]
    minority = sorted(i for written, members in groups if written != best[0] for i in members)
    return Vote(best[0], best[1], minority, unanswered, counts)


def direct_prompt(question: str, shots: int) -> list[dict[str, str]]:
    """The question after exemplars that give answers without reasoning."""
    messages = [{"role": "system", "content": DIRECT_INSTRUCTION}]
    for shot in cot_shots()[:shots]:
        messages += [{"role": "user", "content": shot["question"]},
                     {"role": "assistant",
                      "content": f"The answer is {extract_answer(shot['solution'])}."}]
    return [*messages, {"role": "user", "content": question}]


def training_messages(fmt: Format, question: str, target: str,
                      shots: int) -> list[dict[str, str]]:
    """One mixed-format training example: its prompt turns, then `target` as the reply."""
    reply = {"role": "assistant", "content": target}
    if fmt == "cot":
        return [*cast(list[dict[str, str]], solve_prompt(question, shots)), reply]
    if fmt == "direct":
        return [*direct_prompt(question, shots), reply]
    if fmt == "zero-shot-cot":
        return [{"role": "user", "content": f"{question}\n\n{STEP_BY_STEP}"}, reply]
    return [{"role": "user", "content": question}, reply]


class LMSIOptions(EachOptions):
    """Options of self-consistency."""

    backend: str = "default"
    m: int = Field(32, ge=1)  # reasoning paths sampled per question
    shots: int = Field(4, ge=0)
    sampling: Sampling = Sampling(temperature=0.7, max_tokens=384)
    min_agreement: float = Field(0.0, ge=0.0, le=1.0)  # share of paths the majority needs
    formats: list[Format] = Field(default_factory=lambda: list(FORMATS), min_length=1)
    question_field: str = "question"


class SelfConsistency(Each[LMSIOptions]):
    """Keeps the paths that reach the majority answer, in mixed formats; reads no gold."""

    Options: ClassVar[type[StepOptions]] = LMSIOptions

    def requires(self) -> Requirements:
        return {self.options.question_field: str}

    def provides(self) -> set[str] | None:
        return None  # only the question travels on: nothing else of the input is read

    def uses(self) -> list[Uses]:
        return [Uses(self.options.backend)]

    async def process(self, record: Record, ctx: StepContext) -> list[Record]:
        o = self.options
        question = question_of(record, o.question_field)
        # seeded by the question alone: other fields (a gold label) cannot change the samples
        reply = await ctx.generate(solve_prompt(question, o.shots), o.sampling, n=o.m,
                                   seed=ctx.seed_for(None, "lmsi", question))
        paths = [replace(reply, completions=(one,)) for one in reply.completions]
        found = vote(reply.texts)
        agreement = found.agreement(len(paths))
        verdict = {"verifier": "self-consistency", "answer": found.answer,
                   "votes": len(found.majority), "paths": len(paths),
                   "agreement": round(agreement, 4), "counts": found.counts}
        if found.answer is None or agreement < o.min_agreement:
            reason = "low agreement" if found.answer else \
                "tied vote" if found.counts else "no answer found"
            ctx.drop({**record, "votes": found.counts}, reason,
                     f"{len(found.majority)}/{len(paths)} paths agree"
                     + (f" on {found.answer}" if found.answer else ""))
            return []
        for reason, indexes in (("minority answer", found.minority),
                                ("no answer found", found.unanswered)):
            for i in indexes:
                ctx.drop(self._made(record, question, paths[i], "cot", i, verdict, ctx),
                         reason, f"answer {extract_answer(paths[i].text)!r}, "
                                 f"majority {found.answer!r}")
        return list(self._examples(record, question, paths, found, verdict, ctx))

    def _examples(self, record: Record, question: str, paths: list[Reply], found: Vote,
                  verdict: dict[str, Any], ctx: StepContext) -> Iterable[Record]:
        """Every kept path in the chain-of-thought formats; the answer-only formats once."""
        for fmt in self.options.formats:
            if fmt in ("cot", "zero-shot-cot"):
                for i in found.majority:
                    yield self._made(record, question, paths[i], fmt, i, verdict, ctx)
            else:
                first = paths[found.majority[0]]
                answer = replace(first, completions=(replace(
                    first.completions[0], text=f"The answer is {found.answer}."),))
                yield self._made(record, question, answer, fmt, 0, verdict, ctx)

    def _made(self, record: Record, question: str, path: Reply, fmt: Format, index: int,
              verdict: dict[str, Any], ctx: StepContext) -> Record:
        target = path.text.strip()
        fields = {"question": question, "rationale": target, "format": fmt,
                  "majority_answer": verdict["answer"], "agreement": verdict["agreement"],
                  "messages": training_messages(fmt, question, target, self.options.shots),
                  "_meta": {"verifier": verdict}}
        return ctx.derive([record], fields, f"{fmt}.{index}", path)
