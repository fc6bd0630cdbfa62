"""Judges: functions over the context's model service, usable from any step family."""

from __future__ import annotations

from synthaug.errors import ParseError
from synthaug.records import Record
from synthaug.steps.context import StepContext
from synthaug.steps.llm import Reply, Sampling

VERDICT = Sampling(temperature=0.0, max_tokens=3)


async def yes_no(ctx: StepContext, prompt: str, *, key: Record | None, role: str | None = None,
                 salt: str = "judge") -> tuple[bool, Reply]:
    """A greedy yes/no verdict on `prompt`; a reply that is neither raises ParseError."""
    reply = await ctx.generate([{"role": "user", "content": prompt}], VERDICT,
                               seed=ctx.seed_for(key, salt), role=role)
    word = reply.text.strip().lower()
    if word.startswith("yes"):
        return True, reply
    if word.startswith("no"):
        return False, reply
    raise ParseError(f"the judge answered neither yes nor no: {reply.text[:60]!r}",
                     raw=reply.texts)
