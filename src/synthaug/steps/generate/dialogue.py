"""self-chat: a user simulator and an assistant talk for N turns (UltraChat, Ding et al., 2023;
Baize, Xu et al., 2023). Two backend roles (or one playing both); stop rules end a dialogue
early: the user signals the end, a turn is empty, or a turn repeats an earlier one."""

from __future__ import annotations

from typing import ClassVar

from synthaug import template
from synthaug.records import Record, content
from synthaug.steps.base import Each, EachOptions, Requirements, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.llm import Reply, Sampling, Uses

_USER_ROLE = ("You are playing a curious person chatting with an AI assistant about: {topic}. "
              "Read the conversation so far and write only your next message as that person: "
              "a follow-up question or request, one or two sentences. If you have nothing "
              "more to ask, write [END].")
END_MARKERS = ("[end]", "goodbye", "bye!", "thanks, that's all", "that is all")


class SelfChatOptions(EachOptions):
    """Options of self-chat."""

    backend: str = "default"  # the assistant
    user_backend: str | None = None  # default: the assistant's backend plays the user too
    opening_field: str = "question"
    topic_field: str = "topic"
    assistant_system: str | None = None
    turns: int = 3  # assistant replies per dialogue
    sampling: Sampling = Sampling(max_tokens=384)  # the assistant's turns
    user_sampling: Sampling = Sampling(max_tokens=384)  # the user simulator's turns


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


class SelfChat(Each[SelfChatOptions]):
    """Emits one record per dialogue, in TRL's `messages` shape."""

    Options: ClassVar[type[StepOptions]] = SelfChatOptions

    def requires(self) -> Requirements:
        o = self.options
        return {o.opening_field: str, **template.requirements(o.assistant_system)}

    def provides(self) -> set[str]:
        return {"messages", "stop_reason"}

    def uses(self) -> list[Uses]:
        o = self.options
        return [Uses(o.backend), *([Uses(o.user_backend)] if o.user_backend else [])]

    def _as_user(self, record: Record, history: list[dict[str, str]]) -> list[dict[str, str]]:
        o = self.options
        field = o.topic_field if record.get(o.topic_field) is not None else o.opening_field
        transcript = "\n".join(f"{t['role'].upper()}: {t['content']}" for t in history)
        return [{"role": "system",
                 "content": _USER_ROLE.format(topic=template.text_field(record, field))},
                {"role": "user", "content": transcript}]

    async def process(self, record: Record, ctx: StepContext) -> list[Record]:
        """One dialogue seeded by the record's opening question."""
        o = self.options
        history = [{"role": "user", "content": template.text_field(record, o.opening_field)}]
        system = [{"role": "system", "content": template.render(o.assistant_system, record)}] \
            if o.assistant_system else []
        reason, calls = "turn limit", list[Reply]()
        for turn in range(o.turns):
            reply = await ctx.generate(system + history, o.sampling,
                                       seed=ctx.seed_for(record, turn))
            history.append({"role": "assistant", "content": reply.text.strip()})
            calls.append(reply)
            if turn == o.turns - 1:
                break
            asked = await ctx.generate(self._as_user(record, history), o.user_sampling,
                                       seed=ctx.seed_for(record, turn, "user"),
                                       role=o.user_backend)
            calls.append(asked)
            found = stop_reason(asked.text.strip(), history)
            if found:
                reason = found
                break
            history.append({"role": "user", "content": asked.text.strip()})
        return [ctx.derive([record], {**content(record), "messages": system + history,
                                      "stop_reason": reason}, 0, *calls)]
