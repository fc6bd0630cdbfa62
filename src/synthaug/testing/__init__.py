"""Test helpers for synthaug and its plugins: a real OpenAI-compatible HTTP server
(plain and streamed replies, scripted faults) for engine tests, and an in-process fake
backend (`Script`, replies as a function of the request) for step-mechanism tests.

The server needs the `test` extra (uvicorn, starlette); it is imported on first use, so the
fake backend (registered as `fake`) loads without it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from synthaug.testing.fake import FakeBackend as FakeBackend
    from synthaug.testing.fake import Script as Script
    from synthaug.testing.server import FakeOpenAIServer as FakeOpenAIServer
    from synthaug.testing.server import Reply as Reply

_LAZY = {"FakeBackend": "synthaug.testing.fake", "Script": "synthaug.testing.fake",
         "FakeOpenAIServer": "synthaug.testing.server", "Reply": "synthaug.testing.server"}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'synthaug.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
