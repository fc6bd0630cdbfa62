"""An in-process fake backend: replies are a function of the request, no port, no thread.

    script = Script(lambda request: "4")            # or a str, list[str] (n samples), Exception
    pipeline = Pipeline.from_steps(step, backends={"default": script.spec()})
    ... run ...
    script.requests                                   # every Request the steps sent

It registers as the backend `fake` through the same entry point group as any plugin. Engine,
retry and concurrency behaviour is tested against the real HTTP server (`FakeOpenAIServer`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, ClassVar

from pydantic import Field

from synthaug.backends.base import Backend, BackendOptions, Completion, Request
from synthaug.errors import ConfigError

Answer = str | list[str] | BaseException
Responder = Callable[[Request], Answer]

_SCRIPTS: dict[str, Script] = {}
_NAMES = itertools.count()


def text_of(request: Request) -> str:
    """The text a request carries: the raw prompt, or the last message's content."""
    if request.prompt is not None:
        return request.prompt
    return str((request.messages or ({"content": ""},))[-1].get("content", ""))


def echo(request: Request) -> Answer:
    """The default responder: 'echo: ' and the request's text."""
    return "echo: " + text_of(request)


class Script:
    """Scripted replies for the fake backend, and the requests it received."""

    def __init__(self, respond: Responder = echo, *, name: str | None = None) -> None:
        self.respond = respond
        self.requests: list[Request] = []
        self.name = name or f"script-{next(_NAMES)}"
        _SCRIPTS[self.name] = self

    def spec(self, **options: Any) -> Any:
        """A BackendSpec for a pipeline's `backends` mapping that answers from this script."""
        from synthaug.pipeline import BackendSpec

        return BackendSpec(use="fake", **{"with": {"script": self.name, **options}})

    def answer(self, request: Request) -> list[Completion]:
        """The completions for one request (an Exception answer is raised)."""
        self.requests.append(request)
        found = self.respond(request)
        if isinstance(found, BaseException):
            raise found
        texts = [found] * request.n if isinstance(found, str) else list(found)
        return [Completion(text=t, finish_reason="stop", prompt_tokens=len(text_of(request)),
                           completion_tokens=len(t.split())) for t in texts]


class FakeOptions(BackendOptions):
    """Options of the fake backend."""

    script: str
    concurrency: int = Field(4, ge=1)
    max_retries: int = Field(1, ge=0)


class FakeBackend(Backend[FakeOptions]):
    """Answers from a `Script` in this process; can do everything a step may ask for."""

    name = "fake"
    Options: ClassVar[type[BackendOptions]] = FakeOptions
    raw_completion = True
    json_schema = True
    logprobs = True

    def __init__(self, options: BackendOptions) -> None:
        super().__init__(options)
        name = self.options.script
        if name not in _SCRIPTS:
            raise ConfigError(f"no fake script named {name!r}", field="script")
        self.script = _SCRIPTS[name]

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "script": self.script.name}

    async def generate(self, request: Request) -> list[Completion]:
        return self.script.answer(request)
