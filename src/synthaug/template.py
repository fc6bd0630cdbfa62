"""Prompt templates: `{field}` placeholders filled in one pass; record text is never re-parsed.

`{{` and `}}` write literal braces. Dotted names (`{a.b}`) reach into nested dicts.
Values from records are inserted verbatim, so a record holding `{{ config }}` or
`{% for %}` comes out exactly as written. A placeholder's value must be a string: a number,
list, object, boolean or null is never sent to a model as text (WrongType -> rejects).
"""

from __future__ import annotations

import re
from typing import Any

from synthaug.errors import MissingField, WrongType

_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][\w.]*)\}")

__all__ = ["MissingField", "WrongType", "fields", "messages", "render", "requirements",
           "text_field"]


def fields(template: str) -> list[str]:
    """The top-level field names a template reads, in order of appearance."""
    names = [m.group(1).split(".")[0] for m in _TOKEN.finditer(template) if m.group(1)]
    return list(dict.fromkeys(names))


def requirements(*templates: str | None) -> dict[str, type]:
    """Fields the templates read, with the type each must hold (dict for dotted names)."""
    found: dict[str, type] = {}
    for text in templates:
        for match in _TOKEN.finditer(text or ""):
            if match.group(1):
                top, dot, _ = match.group(1).partition(".")
                found.setdefault(top, dict if dot else str)
    return found


def _lookup(record: dict[str, Any], dotted: str) -> Any:
    value: Any = record
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise MissingField(dotted)
        value = value[part]
    return value


def text_field(record: dict[str, Any], name: str) -> str:
    """The string held in `record[name]` (dotted names reach into dicts)."""
    value = _lookup(record, name)
    if not isinstance(value, str):
        raise WrongType(name, "a string", value)
    return value


def render(template: str, record: dict[str, Any]) -> str:
    """Fill `template` from `record` in a single pass."""

    def substitute(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        return text_field(record, match.group(1))

    return _TOKEN.sub(substitute, template)


def messages(record: dict[str, Any], user: str, system: str | None = None) -> list[dict[str, str]]:
    """Chat messages from a user template and an optional system template."""
    found = [{"role": "user", "content": render(user, record)}]
    if system:
        found.insert(0, {"role": "system", "content": render(system, record)})
    return found
