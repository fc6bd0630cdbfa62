"""self-refine: iterative refinement with self-feedback (Self-Refine, Madaan et al., 2023).

One model writes a first response, then loops: it gives feedback on its latest response
(specific and actionable, after worked examples of such feedback); if the feedback says the
response is good enough (`stop_phrase`), or scores it at or above `stop_score`, or
`max_iterations` refinements were made, the loop stops; otherwise the model refines, shown
the instruction and every earlier attempt with its feedback (the paper's history), not only
the last one.

The record keeps each attempt with its feedback (`iterations`) and why the loop stopped
(`stop_reason`); the last attempt is the SFT answer (`messages`). When it differs from the
first, the pair `chosen` (last attempt) / `rejected` (first attempt) feeds `--format dpo`. A
refinement that is empty or identical to its input ends the loop unused; a record whose
first response was neither judged good enough nor changed is dropped.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, model_validator

from synthaug import template
from synthaug.errors import ConfigError
from synthaug.records import Record, content
from synthaug.steps.base import Each, EachOptions, Requirements, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.judges import score_line
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

_EXAMPLE = ("instruction", "response", "feedback", "refined")
_FEEDBACK = ("You review a response to an instruction and write feedback its writer can act "
             "on: name each concrete problem, where it is and how to fix it. Do not rewrite "
             "the response yourself.")
_REFINE = ("You improve a response to an instruction by acting on feedback. Keep what is "
           "already good, fix every problem the feedback names, and reply with the improved "
           "response only.")


class RefineOptions(EachOptions):
    """Options of self-refine."""

    backend: str = "default"
    template: str = "{instruction}"  # the instruction
    response_field: str | None = None  # the first response, if a step wrote it (None: asked)
    examples: str = "self_refine_examples.jsonl"  # instruction, response, feedback, refined
    shots: int = Field(2, ge=0)  # worked examples in the feedback and refine prompts
    max_iterations: int = Field(4, ge=1)  # refinements at most
    stop_phrase: str | None = "NO FURTHER CHANGES NEEDED"  # feedback saying it is good enough
    stop_score: float | None = None  # stop when the feedback's score reaches this
    scale: tuple[int, int] = (1, 10)
    history: bool = True  # show every earlier attempt and its feedback when refining
    response_sampling: Sampling = Sampling(temperature=0.7, max_tokens=384)
    sampling: Sampling = Sampling(temperature=0.0, max_tokens=384)

    @model_validator(mode="after")
    def _a_stop(self) -> RefineOptions:
        if self.stop_phrase is None and self.stop_score is None:
            raise ValueError("set stop_phrase or stop_score: the feedback needs a way to say "
                             "the response is good enough")
        if self.stop_score is not None and not self.scale[0] <= self.stop_score <= \
                self.scale[1]:
            raise ValueError(f"stop_score {self.stop_score} is outside the scale "
                             f"{list(self.scale)}")
        return self


class SelfRefine(Each[RefineOptions]):
    """Generate, then feedback and refine until the feedback says stop or the iterations run
    out; every attempt and its feedback are kept."""

    Options: ClassVar[type[StepOptions]] = RefineOptions

    def __init__(self, options: StepOptions | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        o = self.options
        examples = load_entries(o.examples, _EXAMPLE) if o.shots else []
        if o.shots > len(examples):
            raise ConfigError(f"shots is {o.shots} but the file has {len(examples)} examples",
                              file=o.examples, field="shots")
        shown = examples[:o.shots]
        self.feedback_system = _FEEDBACK + "".join(
            f"\n\nExample {i}:\nInstruction: {e['instruction']}\nResponse: {e['response']}\n"
            f"Feedback:\n{e['feedback']}" for i, e in enumerate(shown, 1))
        self.refine_system = _REFINE + "".join(
            f"\n\nExample {i}:\nInstruction: {e['instruction']}\nResponse: {e['response']}\n"
            f"Feedback:\n{e['feedback']}\nImproved response: {e['refined']}"
            for i, e in enumerate(shown, 1))

    def uses(self) -> list[Uses]:
        return [Uses(self.options.backend)]

    def requires(self) -> Requirements:
        return prompt_requirements(self.options.template, self.options.response_field)

    def provides(self) -> set[str]:
        return {"prompt", "messages", "chosen", "rejected", "chosen_model", "rejected_model",
                "iterations", "stop_reason"}

    def feedback_ask(self) -> str:
        """What the feedback prompt asks for beyond the feedback: the stop signal."""
        o = self.options
        ask = "Write your feedback as a numbered list."
        if o.stop_score is not None:
            ask += (f" Then end with the line 'Score: N/{o.scale[1]}', rating the response "
                    f"from {o.scale[0]} (poor) to {o.scale[1]} (nothing left to improve).")
        if o.stop_phrase:
            ask += (f" If the response needs no further change, write the line "
                    f"'{o.stop_phrase}' instead of a list.")
        return ask

    def verdict(self, feedback: str, refinements: int) -> tuple[float | None, str | None]:
        """(the feedback's score, why to stop now or None); ParseError when a score is asked
        for and the feedback, not saying stop, gives none."""
        o = self.options
        if o.stop_phrase and o.stop_phrase.lower() in feedback.lower():
            return None, "the feedback says the response is good enough"
        score = None
        if o.stop_score is not None:  # its last 'Score:' line, never a score it mentions
            score = score_line(feedback, *o.scale)
            if score >= o.stop_score:
                return score, f"score {score:g} reached the threshold {o.stop_score:g}"
        if refinements >= o.max_iterations:
            return score, f"max iterations ({o.max_iterations})"
        return score, None

    async def feedback(self, record: Record, ctx: StepContext, prompt: str, attempt: str,
                       t: int) -> Reply:
        user = f"Instruction:\n{prompt}\n\nResponse:\n{attempt}\n\n{self.feedback_ask()}"
        return await ctx.generate([{"role": "system", "content": self.feedback_system},
                                   {"role": "user", "content": user}], self.options.sampling,
                                  role=self.options.backend,
                                  seed=ctx.seed_for(record, "feedback", t))

    async def refine(self, record: Record, ctx: StepContext, prompt: str,
                     iterations: list[dict[str, Any]]) -> Reply:
        shown = iterations if self.options.history else iterations[-1:]
        first = len(iterations) - len(shown) + 1
        past = "".join(f"Attempt {i}:\n{it['response']}\n\nFeedback on attempt {i}:\n"
                       f"{it['feedback']}\n\n" for i, it in enumerate(shown, first))
        user = (f"Instruction:\n{prompt}\n\n{past}Write attempt {len(iterations) + 1}: an "
                "improved response that acts on the latest feedback without bringing back "
                "problems that earlier feedback pointed out. Reply with the response only.")
        return await ctx.generate([{"role": "system", "content": self.refine_system},
                                   {"role": "user", "content": user}], self.options.sampling,
                                  role=self.options.backend,
                                  seed=ctx.seed_for(record, "refine", len(iterations)))

    async def first(self, record: Record, ctx: StepContext, prompt: str) -> tuple[str,
                                                                                 Reply | None]:
        o = self.options
        if o.response_field:
            return text_field(record, o.response_field).strip(), None
        reply = await ctx.generate([{"role": "user", "content": prompt}], o.response_sampling,
                                   seed=ctx.seed_for(record, "response"), role=o.backend)
        return required(reply.text.strip(), "response"), reply

    async def process(self, record: Record, ctx: StepContext) -> list[Record]:
        prompt = template.render(self.options.template, record).strip()
        attempt, made = await self.first(record, ctx, prompt)
        replies = [made] if made else []
        iterations: list[dict[str, Any]] = []
        while True:
            said = await self.feedback(record, ctx, prompt, attempt, len(iterations))
            feedback = required(cleaned(said.text, "feedback"), "feedback")
            score, stop = self.verdict(feedback, len(iterations))
            replies.append(said)
            iterations.append({"response": attempt, "feedback": feedback, "score": score})
            if stop:
                break
            refined = await self.refine(record, ctx, prompt, iterations)
            replies.append(refined)
            text = cleaned(refined.text, "improved response", f"attempt {len(iterations) + 1}")
            stop = unchanged(attempt, text)
            if stop:
                ctx.stats.notes[f"refinements dropped: {stop}"] += 1
                stop = f"refinement unused: {stop}"
                break
            attempt = text
        return self.finish(record, ctx, prompt, iterations, stop, replies, made)

    def finish(self, record: Record, ctx: StepContext, prompt: str,
               iterations: list[dict[str, Any]], stop: str, replies: list[Reply],
               made: Reply | None) -> list[Record]:
        """The record with its iterations; a pair when the last attempt differs from the
        first; dropped when nothing was refined and the feedback never said stop."""
        first, last = iterations[0]["response"], iterations[-1]["response"]
        fields = revised_fields(prompt, first, last)
        if len(iterations) == 1:
            del fields["chosen"], fields["rejected"]
        else:
            fields.update(chosen_model=replies[-1].model,
                          rejected_model=made.model if made else record.get("model"))
        out = ctx.derive([record], {**content(record), **fields, "iterations": iterations,
                                    "stop_reason": stop}, 0, *replies)
        if len(iterations) == 1 and stop.startswith("refinement unused"):
            ctx.drop(out, "no refinement changed the response", stop)
            return []
        return [out]
