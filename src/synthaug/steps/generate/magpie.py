"""Magpie (Xu et al., 2024): an aligned model writes instructions when given only the chat
template's pre-query prefix (for ChatML, `<|im_start|>user\n`), then answers them.

The prefix comes from rendering the backend's chat template around a sentinel user message;
the instruction is sampled as a raw completion that stops at the end-of-turn marker. A backend
that cannot do raw completion or does not know its chat template gets a clear error.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from synthaug.backends.base import Request
from synthaug.backends.cache import prompt_sha
from synthaug.errors import BackendError, ConfigError
from synthaug.records import Record, derive
from synthaug.steps.base import Generator, StepOptions
from synthaug.steps.context import StepContext

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
    temperature: float = 1.0
    top_p: float = 1.0
    max_instruction_tokens: int = 128
    max_response_tokens: int = 384


class Magpie(Generator[MagpieOptions]):
    """Instructions from the pre-query prefix alone, then responses; empty and duplicate
    instructions are dropped with their reason."""

    Options: ClassVar[type[StepOptions]] = MagpieOptions
    uses_llm = True

    def provides(self) -> set[str]:
        return {"instruction", "response", "messages"}

    def _template(self, ctx: StepContext) -> str:
        backend = ctx.client().backend
        if not backend.raw_completion:
            raise ConfigError(f"magpie needs raw completion; backend '{backend.name}' cannot "
                              "do it", step=ctx.label, field="backend")
        chat_template = backend.chat_template
        if not chat_template:
            raise ConfigError(f"magpie needs the model's chat template; backend "
                              f"'{backend.name}' does not know it: set its chat_template option",
                              step=ctx.label, field="chat_template")
        return chat_template

    async def _conversation(self, index: int, chat_template: str,
                            ctx: StepContext) -> tuple[list[dict[str, str]], dict[str, Any]]:
        o, history = self.options, list[dict[str, str]]()
        first: dict[str, Any] = {}
        for turn in range(o.turns):
            prefix, end = pre_query(chat_template, history)
            seed = ctx.seed_for(None, "magpie", index, turn)
            ask = Request(prompt=prefix, seed=seed, temperature=o.temperature, top_p=o.top_p,
                          max_tokens=o.max_instruction_tokens, stop=(end,) if end else ())
            instruction = (await ctx.complete(ask))[0].text.strip()
            if not instruction:
                break
            history.append({"role": "user", "content": instruction})
            answer = Request(messages=tuple(history), seed=seed, temperature=0.7,
                             max_tokens=o.max_response_tokens)
            history.append({"role": "assistant",
                            "content": (await ctx.complete(answer))[0].text.strip()})
            first = first or {"prompt_sha": prompt_sha(ask), "seed": seed}
        return history, first

    async def generate(self, pool: list[Record], ctx: StepContext) -> AsyncIterator[Record]:
        chat_template = self._template(ctx)
        seen: set[str] = set()
        backend = ctx.client().backend

        async def one(index: int) -> tuple[int, list[dict[str, str]], dict[str, Any]] | None:
            try:
                history, first = await self._conversation(index, chat_template, ctx)
            except BackendError as exc:
                ctx.fail({"_meta": {"id": f"magpie-{index}"}}, str(exc))
                return None
            return index, history, first

        for done in await asyncio.gather(*map(one, range(self.options.count))):
            if done is None:
                continue
            index, history, first = done
            record = derive([], {"instruction": history[0]["content"] if history else "",
                                 "response": history[1]["content"] if len(history) > 1 else "",
                                 "messages": history},
                            step=ctx.label, index=index, backend=backend.name,
                            model=backend.model, **first)
            key = " ".join(record["instruction"].lower().split())
            if not key:
                ctx.drop(record, "empty instruction")
            elif key in seen:
                ctx.drop(record, "duplicate instruction")
            else:
                seen.add(key)
                yield record
