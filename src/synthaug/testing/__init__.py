"""Test helpers for synthaug and its plugins: a real OpenAI-compatible HTTP server."""

from synthaug.testing.server import FakeOpenAIServer, Reply

__all__ = ["FakeOpenAIServer", "Reply"]
