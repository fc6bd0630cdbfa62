"""self-rewarding: Self-Rewarding Language Models (Yuan et al., 2024, arXiv:2401.10020).

Each round (an iteration M_t -> M_t+1) the model the role holds now:

1. writes `candidates` (N = 4) responses to every prompt, sampled at temperature 0.7, top_p 0.9;
2. judges each one itself with an additive 5-point LLM-as-a-judge prompt (one point per
   criterion met, 0 to 5), `judge_samples` (3) times, sampled; a candidate's score is the mean
   of its readable judgements. An unreadable judgement is a failure row, never a zero;
3. pairs the highest-scoring candidate (chosen) with the lowest-scoring one (rejected); a
   prompt whose candidates all score the same is dropped (`equal scores`).

With `new_prompts`, each round first writes that many new prompts, each from 8 example
prompts (6 of the input, 2 written in earlier rounds), screened as Self-Instruct screens new
instructions (the paper's self-instruction creation, which there used a fixed model: point
`prompter` at a role that is not trained to do the same); without, the input's prompts are
asked each round. The `between_rounds` command trains the next model on the
round's pairs (DPO in the paper) and switches the role: the next round's candidates and
judgements both come from it. Every judgement is appended to `judgements` (kind `rate`,
judge = the model that wrote the candidates) for `synthaug report`.
"""

from __future__ import annotations

import asyncio
import re
from statistics import fmean
from typing import Any, ClassVar

from pydantic import Field

from synthaug.errors import ParseError
from synthaug.records import Record, content
from synthaug.steps.base import StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.generate.self_instruct import NOT_TEXT, screen
from synthaug.steps.generate.similarity import RougePool
from synthaug.steps.llm import Reply, Sampling, Uses
from synthaug.steps.prefer.common import judgement, settled, with_judgements
from synthaug.steps.prefer.rate import parse_rating
from synthaug.steps.prefer.selfplay import SelfPlayOptions, SelfPlayRounds, same_text

JUDGE = """Review the user's request and the response to it below, and score the response \
with an additive 5-point system: start from 0 and add one point for each criterion it meets.
- Add 1 point if the response is on topic: it gives some information that bears on the \
request, even if incomplete or partly beside the point.
- Add a 2nd point if it covers a substantial part of the request, though it may leave part \
of it unresolved or stop short of a direct answer.
- Add a 3rd point if it answers the core of the request in a useful way, even if it reads \
like a web page or a blog post rather than an assistant's reply.
- Add a 4th point if it answers directly and completely from an AI assistant's point of \
view, well organised and helpful, with at most minor room to be clearer, shorter or more \
focused.
- Add a 5th point if it is fitted exactly to the request, with nothing superfluous, shows \
expert knowledge, and is an insightful, engaging answer of high quality.

Request: {prompt}

<response>{response}</response>

After reading the request and the response, justify your total in at most 100 words, then \
end with the line "Score: N", where N is the total number of points (0 to 5)."""

WRITE = """Here are some tasks people asked an AI assistant to do:

{examples}

Write one new task, different from these, that someone might ask an AI assistant. Reply \
with the task only, after "Task {next}:".

Task {next}:"""
_TASK = re.compile(r"^\s*task\s*\d+\s*[:.]\s*", re.IGNORECASE)
_NEXT_TASK = re.compile(r"\n\s*task\s*\d+\s*[:.]", re.IGNORECASE)


class SelfRewardOptions(SelfPlayOptions):
    """Options of self-rewarding."""

    rounds: int = Field(2, ge=1)  # M1 -> M2 -> M3: pairs from M1, then from M2
    candidates: int = Field(4, ge=2)  # N responses per prompt
    judge_samples: int = Field(3, ge=1)  # judgements per response, averaged
    sampling: Sampling = Sampling(temperature=0.7, top_p=0.9, max_tokens=512)
    judge_sampling: Sampling = Sampling(temperature=0.7, top_p=0.9, max_tokens=256)
    new_prompts: int = Field(0, ge=0)  # prompts written per round (0: the input's prompts)
    shots: int = Field(8, ge=1)  # example prompts shown to write one new prompt
    machine_shots: int = Field(2, ge=0)  # of them, prompts written in earlier rounds
    rouge_threshold: float = Field(0.7, gt=0.0, le=1.0)  # drop new prompts this close to one
    prompter: str | None = None  # the role that writes new prompts (None: `backend`)
    prompt_sampling: Sampling = Sampling(temperature=0.6, top_p=0.9, max_tokens=128)


def first_task(text: str) -> str:
    """The new prompt in a prompt writer's reply: its first task, without a 'Task N:' label."""
    body = _TASK.sub("", text.strip(), count=1)
    return _NEXT_TASK.split(body, maxsplit=1)[0].strip()


class SelfRewarding(SelfPlayRounds[SelfRewardOptions]):
    """N candidates per prompt, each judged by the same model (additive 0-5, averaged over
    samples); best vs worst is the round's pair."""

    Options: ClassVar[type[StepOptions]] = SelfRewardOptions

    def uses(self) -> list[Uses]:
        o = self.options
        extra = [Uses(o.prompter)] if o.new_prompts and o.prompter not in (None, o.backend) \
            else []
        return [Uses(o.backend), *extra]

    def provides(self) -> set[str] | None:
        if self.options.new_prompts:  # new prompts keep none of the input records' fields
            return None
        return {"completions", "judgements", "chosen", "rejected", "chosen_model",
                "rejected_model", "chosen_score", "rejected_score", "round"}

    async def round(self, index: int, ctx: StepContext) -> tuple[list[Record], bool]:
        prompts = await self._new_prompts(index, ctx) if self.options.new_prompts else \
            self.prompts
        found = await asyncio.gather(*(ctx.attempt(self._pair(record, index, ctx), record)
                                       for record in prompts))
        pairs = [pair for pair in found if pair is not None]
        ctx.note_round(index, prompts=len(prompts), pairs=len(pairs))
        return pairs, not self.prompts

    # -- 1. self-instruction creation (optional) ------------------------------------------
    async def start(self, pool: list[Record], ctx: StepContext) -> None:
        await super().start(pool, ctx)
        self.written: list[Record] = []  # new prompts kept so far, over all rounds
        self.similar = RougePool([self.prompt_of(record) for record in self.prompts])

    def _examples(self, index: int, k: int, ctx: StepContext) -> list[Record]:
        """The prompts shown to write new prompt `k` of round `index`: input prompts and up
        to `machine_shots` written in earlier rounds (Self-Instruct's 6 + 2), shuffled."""
        o = self.options
        rng = ctx.rng(None, "shots", index, k)
        machines = rng.sample(self.written, min(o.machine_shots, len(self.written), o.shots))
        humans = rng.sample(self.prompts, min(o.shots - len(machines), len(self.prompts)))
        examples = humans + machines
        rng.shuffle(examples)
        return examples

    async def _new_prompts(self, index: int, ctx: StepContext) -> list[Record]:
        """Up to `new_prompts` new prompts, screened as Self-Instruct screens instructions."""
        o = self.options
        if not self.prompts:
            return []
        shown = [self._examples(index, k, ctx) for k in range(o.new_prompts)]
        replies = await asyncio.gather(*(ctx.attempt(self._write(examples, index, k, ctx),
                                                     {"round": index, "new_prompt": k})
                                         for k, examples in enumerate(shown)))
        made = []
        for k, (examples, reply) in enumerate(zip(shown, replies, strict=True)):
            if reply is None:
                continue
            task = first_task(reply.text)
            record = ctx.derive(examples, {"instruction": task, "input": "", "round": index},
                                f"p{index}.{k}", reply)
            unfit = screen(task, NOT_TEXT, 3, 150) if task else "empty"
            score, nearest = self.similar.most_similar(task)
            if unfit:
                ctx.drop(record, f"new prompt {unfit.split(' (')[0]}", unfit)
            elif score >= o.rouge_threshold:
                ctx.drop(record, f"rouge-l >= {o.rouge_threshold}",
                         f"ROUGE-L {score:.2f} with: {nearest}")
            else:
                self.similar.add(task)
                made.append(record)
        self.written += made
        ctx.note_round(index, new_prompts=len(made))
        return made

    async def _write(self, examples: list[Record], index: int, k: int,
                     ctx: StepContext) -> Reply:
        o = self.options
        listed = "\n".join(f"Task {i}: {self.prompt_of(r)}" for i, r in enumerate(examples, 1))
        text = WRITE.format(examples=listed, next=len(examples) + 1)
        return await ctx.generate([{"role": "user", "content": text}], o.prompt_sampling,
                                  role=o.prompter or o.backend,
                                  seed=ctx.seed_for(None, "new-prompt", index, k))

    # -- 2. candidates judged by their own model --------------------------------------------
    async def _judge(self, record: Record, response: str, i: int, index: int,
                     ctx: StepContext) -> tuple[list[tuple[int, float]], Reply]:
        """(sample, score) of each readable judgement of candidate `i`; an unreadable one is
        written to the failures file."""
        o = self.options
        text = JUDGE.format(prompt=self.prompt_of(record), response=response)
        reply = await ctx.generate([{"role": "user", "content": text}], o.judge_sampling,
                                   n=o.judge_samples, seed=ctx.seed_for(record, "judge", index, i))
        scores = []
        for j, said in enumerate(reply.texts):
            try:
                scores.append((j, parse_rating(said, 0, 5, rationale=False)[0]))
            except ParseError as exc:
                ctx.fail(record, f"unreadable judgement of candidate {i} (sample {j}): {exc}",
                         raw=[said])
        return scores, reply

    async def _pair(self, record: Record, index: int, ctx: StepContext) -> Record | None:
        o = self.options
        made = await ctx.generate(self.asked(record), o.sampling, n=o.candidates,
                                  seed=ctx.seed_for(record, "candidates", index))
        texts = [c.text.strip() for c in made.completions]
        models = [c.model or made.model for c in made.completions]
        judged = await settled(*(self._judge(record, t, i, index, ctx)
                                 for i, t in enumerate(texts)))
        completions, entries = [], []
        for i, (text, model, (scores, reply)) in enumerate(zip(texts, models, judged,
                                                               strict=True)):
            completions.append({"model": model, "text": text, "scores": [s for _, s in scores],
                                "score": round(fmean(s for _, s in scores), 4) if scores
                                else None})
            entries += [judgement("rate", reply.model, completion=i, aspect="additive",
                                  sample=j, score=s, length=len(text), model=model)
                        for j, s in scores]
        fields = {**content(record), "completions": completions, "round": index,
                  "judgements": with_judgements(record, entries)}
        derived = ctx.derive([record], fields, index, made, *(reply for _, reply in judged))
        return self._binarize(record, derived, completions, index, ctx)

    # -- 3. best vs worst -------------------------------------------------------------------
    def _binarize(self, record: Record, derived: Record, completions: list[dict[str, Any]],
                  index: int, ctx: StepContext) -> Record | None:
        """The record with chosen (highest mean score) and rejected (lowest), or None after
        dropping it with its reason."""
        scored = [i for i, c in enumerate(completions) if c["score"] is not None]
        if len(scored) < 2:
            ctx.drop(derived, "fewer than two scored candidates",
                     f"{len(scored)} of {len(completions)} had a readable judgement")
            return None
        top = max(completions[i]["score"] for i in scored)
        bottom = min(completions[i]["score"] for i in scored)
        if top == bottom:
            ctx.drop(derived, "equal scores", f"every scored candidate has {top}")
            return None
        rng = ctx.rng(record, "ties", index)
        best = completions[rng.choice([i for i in scored if completions[i]["score"] == top])]
        worst = completions[rng.choice([i for i in scored
                                        if completions[i]["score"] == bottom])]
        if same_text(best["text"], worst["text"]):
            ctx.drop(derived, "chosen and rejected are the same text", best["text"][:80])
            return None
        derived.update(chosen=best["text"], rejected=worst["text"], chosen_model=best["model"],
                       rejected_model=worst["model"], chosen_score=top, rejected_score=bottom)
        return derived
