"""self-chat: a user simulator and an assistant talk for N turns (UltraChat, Ding et al., 2023;
Baize, Xu et al., 2023). Two backend roles (or one playing both); stop rules end a dialogue
early: the user signals the end, a turn is empty, or a turn repeats an earlier one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import ClassVar

from synthaug import template
from synthaug.backends.base import Request
from synthaug.errors import BackendError
from synthaug.records import Record, content, derive
from synthaug.steps.base import LLMOptions, Step, StepOptions
from synthaug.steps.context import StepContext
from synthaug.streams import concurrent_map

_USER_ROLE = ("You are playing a curious person chatting with an AI assistant about: {topic}. "
              "Read the conversation so far and write only your next message as that person: "
              "a follow-up question or request, one or two sentences. If you have nothing "
              "more to ask, write [END].")
END_MARKERS = ("[end]", "goodbye", "bye!", "thanks, that's all", "that is all")


class SelfChatOptions(LLMOptions):
    """Options of self-chat."""

    user_backend: str | None = None  # default: the assistant's backend plays the user too
    opening_field: str = "question"
    topic_field: str = "topic"
    assistant_system: str | None = None
    turns: int = 3  # assistant replies per dialogue
    max_tokens: int = 384


def stop_reason(message: str, history: list[dict[str, str]]) -> str | None:
    """Why the dialogue should end at this user message, or None."""
    text = message.strip().lower()
    if not text:
        return "empty turn"
    if any(marker in text for marker in END_MARKERS):
        return "user ended"
    if any(text == turn["content"].strip().lower() for turn in history):
        return "repeated turn"
    return None


class SelfChat(Step[SelfChatOptions]):
    """Emits one record per dialogue, in TRL's `messages` shape."""

    Options: ClassVar[type[StepOptions]] = SelfChatOptions
    uses_llm = True

    def requires(self) -> set[str]:
        return {self.options.opening_field}

    def provides(self) -> set[str]:
        return {"messages", "stop_reason"}

    def backend_roles(self) -> list[str]:
        roles = [self.options.backend]
        if self.options.user_backend and self.options.user_backend != self.options.backend:
            roles.append(self.options.user_backend)
        return roles

    def _request(self, messages: list[dict[str, str]], seed: int) -> Request:
        o = self.options
        return Request(messages=tuple(messages), seed=seed, temperature=o.temperature,
                       top_p=o.top_p, max_tokens=o.max_tokens)

    def _as_user(self, record: Record, history: list[dict[str, str]]) -> list[dict[str, str]]:
        topic = str(record.get(self.options.topic_field, record[self.options.opening_field]))
        transcript = "\n".join(f"{t['role'].upper()}: {t['content']}" for t in history)
        return [{"role": "system", "content": _USER_ROLE.format(topic=topic)},
                {"role": "user", "content": transcript}]

    async def dialogue(self, record: Record, ctx: StepContext) -> list[Record]:
        """One dialogue seeded by the record's opening question."""
        o = self.options
        history = [{"role": "user", "content": str(record[o.opening_field])}]
        system = [{"role": "system", "content": template.render(o.assistant_system, record)}] \
            if o.assistant_system else []
        reason = "turn limit"
        try:
            for turn in range(o.turns):
                seed = ctx.seed_for(record, turn)
                reply = (await ctx.complete(self._request(system + history, seed)))[0].text
                history.append({"role": "assistant", "content": reply.strip()})
                if turn == o.turns - 1:
                    break
                asked = (await ctx.complete(self._request(self._as_user(record, history),
                                                          seed + 1), role=o.user_backend))
                message = asked[0].text.strip()
                found = stop_reason(message, history)
                if found:
                    reason = found
                    break
                history.append({"role": "user", "content": message})
        except BackendError as exc:
            ctx.fail(record, str(exc))
            return []
        return [derive([record], {**content(record), "messages": system + history,
                                  "stop_reason": reason}, step=ctx.label, index=0,
                       backend=ctx.client().backend.name, model=ctx.client().backend.model)]

    async def run(self, stream: AsyncIterator[Record], ctx: StepContext) -> AsyncIterator[Record]:
        window = 2 * ctx.client().concurrency
        async for outputs in concurrent_map(stream, lambda r: self.dialogue(r, ctx), window):
            for out in outputs:
                yield out
