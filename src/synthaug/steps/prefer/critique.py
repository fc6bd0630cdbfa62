"""constitutional-revision: the supervised stage of Constitutional AI (Bai et al., 2022).

A helpful model answers a red-team prompt. Then, `revisions` times, a principle is drawn at
random from the constitution (a user file of critique request + revision request pairs); the
model critiques its latest response against that principle's critique request and, with its
critique in the conversation, rewrites the response as the revision request asks. Each
round critiques the previous round's revision. Worked critique-revision transcripts are
shown first, as the paper's few-shot prompt does.

The final revision is the SFT answer (`messages`); the pair `chosen` (final revision) /
`rejected` (initial response) feeds `--format dpo`; the whole chain is kept in `revisions`.
A revision that is empty or identical to its input is not used (the chain goes on from its
input, the entry is marked `dropped` and counted in the step's notes); a record whose final
text is still its initial response is dropped.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from synthaug import template
from synthaug.errors import ConfigError
from synthaug.records import Record, content
from synthaug.steps.base import Each, EachOptions, Requirements, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.llm import Reply, Sampling, Uses
from synthaug.steps.prefer.revision import (
    cleaned,
    load_entries,
    prompt_requirements,
    required,
    revised_fields,
    unchanged,
)
from synthaug.template import text_field

_PRINCIPLE = ("critique_request", "revision_request")
_EXAMPLE = ("prompt", "response", "critique_request", "critique", "revision_request",
            "revision")
_SYSTEM = ("You help review an AI assistant's replies against written principles. Asked for "
           "a critique, say specifically where the assistant's last reply falls short of the "
           "principle in the request. Asked for a revision, write the assistant's new reply "
           "only: it meets the principle and fixes what the critique found.")


class ConstitutionalOptions(EachOptions):
    """Options of constitutional-revision."""

    backend: str = "default"
    template: str = "{instruction}"  # the red-team prompt
    response_field: str | None = None  # the initial response, if a step wrote it (None: asked)
    constitution: str = "constitutional_ai_constitution.yaml"  # critique/revision requests
    examples: str = "constitutional_ai_examples.jsonl"  # worked critique-revision transcripts
    shots: int = Field(2, ge=0)  # transcripts shown before the conversation
    revisions: int = Field(4, ge=1)  # critique-revision rounds, a principle drawn for each
    response_sampling: Sampling = Sampling(temperature=1.0, max_tokens=256)
    sampling: Sampling = Sampling(temperature=0.7, max_tokens=256)


def transcript(example: dict[str, str]) -> str:
    """A worked critique-revision example in the paper's labelled form."""
    return (f"Human: {example['prompt']}\nAssistant: {example['response']}\n"
            f"Critique request: {example['critique_request']}\nCritique: {example['critique']}\n"
            f"Revision request: {example['revision_request']}\nRevision: {example['revision']}")


class ConstitutionalRevision(Each[ConstitutionalOptions]):
    """Critique-revision rounds under randomly drawn principles; the final revision is the
    answer, the initial response the rejected side of the pair."""

    Options: ClassVar[type[StepOptions]] = ConstitutionalOptions

    def __init__(self, options: StepOptions | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        o = self.options
        self.principles = load_entries(o.constitution, _PRINCIPLE)
        examples = load_entries(o.examples, _EXAMPLE) if o.shots else []
        if o.shots > len(examples):
            raise ConfigError(f"shots is {o.shots} but the file has {len(examples)} "
                              "transcripts", file=o.examples, field="shots")
        examples = examples[:o.shots]
        self.system = _SYSTEM + "".join(f"\n\nExample {i}:\n{transcript(e)}"
                                        for i, e in enumerate(examples, 1))

    def uses(self) -> list[Uses]:
        return [Uses(self.options.backend)]

    def requires(self) -> Requirements:
        return prompt_requirements(self.options.template, self.options.response_field)

    def provides(self) -> set[str]:
        return {"prompt", "messages", "chosen", "rejected", "chosen_model", "rejected_model",
                "initial_response", "revisions"}

    def principle(self, record: Record, ctx: StepContext, round_: int) -> tuple[int, dict[str,
                                                                                       str]]:
        """The principle of one round: drawn anew, seeded by the record and the round."""
        index = ctx.rng(record, "principle", round_).randrange(len(self.principles))
        return index, self.principles[index]

    async def initial(self, record: Record, prompt: str, ctx: StepContext) -> tuple[str,
                                                                                   Reply | None]:
        """The response to revise: the record's, or the helpful model's answer."""
        o = self.options
        if o.response_field:
            return text_field(record, o.response_field).strip(), None
        reply = await ctx.generate([{"role": "user", "content": prompt}], o.response_sampling,
                                   seed=ctx.seed_for(record, "response"), role=o.backend)
        return required(reply.text.strip(), "response"), reply

    async def round(self, record: Record, ctx: StepContext, prompt: str, current: str,
                    round_: int) -> tuple[dict[str, Any], list[Reply]]:
        """One critique of `current` against a drawn principle, then the revision."""
        o = self.options
        index, principle = self.principle(record, ctx, round_)
        talk = [{"role": "system", "content": self.system},
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": current},
                {"role": "user", "content": principle["critique_request"]}]
        said = await ctx.generate(talk, o.sampling, role=o.backend,
                                  seed=ctx.seed_for(record, "critique", round_))
        critique = required(cleaned(said.text, "critique"), "critique")
        talk += [{"role": "assistant", "content": critique},
                 {"role": "user", "content": principle["revision_request"]}]
        revised = await ctx.generate(talk, o.sampling, role=o.backend,
                                     seed=ctx.seed_for(record, "revision", round_))
        entry = {"round": round_ + 1, "principle": principle.get("name", index),
                 "critique_request": principle["critique_request"], "critique": critique,
                 "revision_request": principle["revision_request"],
                 "revision": cleaned(revised.text, "revision")}
        return entry, [said, revised]

    async def process(self, record: Record, ctx: StepContext) -> list[Record]:
        o = self.options
        prompt = template.render(o.template, record).strip()
        initial, first = await self.initial(record, prompt, ctx)
        current, chain = initial, []
        replies = [first] if first else []
        for round_ in range(o.revisions):
            entry, said = await self.round(record, ctx, prompt, current, round_)
            replies += said
            why = unchanged(current, entry["revision"])
            if why:  # not kept: the next round critiques the same text again
                entry["dropped"] = why
                ctx.stats.notes[f"revisions dropped: {why}"] += 1
            else:
                current = entry["revision"]
            chain.append(entry)
        model = replies[-1].model
        made = ctx.derive([record], {
            **content(record), **revised_fields(prompt, initial, current),
            "chosen_model": model, "rejected_model": first.model if first else
            record.get("model"), "initial_response": initial, "revisions": chain}, 0, *replies)
        if unchanged(initial, current):
            ctx.drop(made, "no revision changed the response",
                     f"{len(chain)} rounds, each revision empty or identical to its input "
                     "(or the chain came back to the initial response)")
            return []
        return [made]
