"""Magpie (Xu et al., 2024): an aligned model writes instructions when given only the chat
template's pre-query prefix (for ChatML, `<|im_start|>user\n`), then answers them.

The prefix comes from rendering the backend's chat template around a sentinel user message;
the instruction is sampled as a raw completion that stops at the end-of-turn marker. A backend
that cannot do raw completion or does not know its chat template gets a clear error.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import ClassVar

from synthaug.errors import ConfigError
from synthaug.records import Record
from synthaug.steps.base import Generator, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.llm import Reply, Sampling, Uses

SENTINEL = "\x00SYNTHAUG-SENTINEL\x00"


def render_template(chat_template: str, messages: list[dict[str, str]]) -> str:
    """A chat template (Jinja, as in tokenizer configs and GGUF metadata) applied to messages."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        undefined=jinja2.ChainableUndefined)
    return env.from_string(chat_template).render(messages=messages, add_generation_prompt=False,
                                                 bos_token="", eos_token="")


def pre_query(chat_template: str, history: list[dict[str, str]]) -> tuple[str, str]:
    """(text up to where the next user message starts, the end-of-turn marker after it)."""
    rendered = render_template(chat_template, [*history, {"role": "user", "content": SENTINEL}])
    if SENTINEL not in rendered:
        raise ConfigError("the chat template does not place the user message", field="backend")
    prefix, _, after = rendered.partition(SENTINEL)
    end = after.splitlines()[0] if after.strip() else ""
    return prefix, end.strip()


class MagpieOptions(StepOptions):
    """Options of magpie."""

    backend: str = "default"
    count: int = 20
    turns: int = 1
    sampling: Sampling = Sampling(temperature=1.0, max_tokens=128)  # writing the instruction
    response_sampling: Sampling = Sampling(max_tokens=384)  # answering it


Turns = list[dict[str, str]]


class Magpie(Generator[MagpieOptions]):
    """Instructions from the pre-query prefix alone, then responses; empty and duplicate
    instructions are dropped with their reason."""

    Options: ClassVar[type[StepOptions]] = MagpieOptions

    def provides(self) -> set[str]:
        return {"instruction", "response", "messages"}

    def uses(self) -> list[Uses]:
        return [Uses(self.options.backend, raw_completion=True, chat_template=True)]

    async def _conversation(self, index: int, chat_template: str,
                            ctx: StepContext) -> tuple[Turns, list[Reply]]:
        o, history, calls = self.options, Turns(), list[Reply]()
        for turn in range(o.turns):
            prefix, end = pre_query(chat_template, history)
            sampling = o.sampling.model_copy(update={"stop": (end,) if end else ()})
            asked = await ctx.generate(prefix, sampling, seed=ctx.seed_for(None, index, turn))
            instruction = asked.text.strip()
            if not instruction:
                break
            history.append({"role": "user", "content": instruction})
            answer = await ctx.generate(history, o.response_sampling,
                                        seed=ctx.seed_for(None, index, turn, "answer"))
            history.append({"role": "assistant", "content": answer.text.strip()})
            calls += [asked, answer]
        return history, calls

    async def generate(self, pool: list[Record], ctx: StepContext) -> AsyncIterator[Record]:
        chat_template = ctx.chat_template()
        if not chat_template:  # checked before the run; a backend may still lose it
            raise ConfigError("magpie needs the model's chat template", step=ctx.label,
                              field="chat_template")
        seen: set[str] = set()
        done = await asyncio.gather(*(
            ctx.attempt(self._conversation(i, chat_template, ctx), {"conversation": i})
            for i in range(self.options.count)))
        for index, made in enumerate(done):
            if made is None:
                continue
            history, calls = made
            record = ctx.derive([], {
                "instruction": history[0]["content"] if history else "",
                "response": history[1]["content"] if len(history) > 1 else "",
                "messages": history}, index, *calls)
            key = " ".join(record["instruction"].lower().split())
            if not key:
                ctx.drop(record, "empty instruction")
            elif key in seen:
                ctx.drop(record, "duplicate instruction")
            else:
                seen.add(key)
                yield record
