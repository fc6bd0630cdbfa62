"""Prompt templates: `{field}` placeholders filled in one pass; record text is never re-parsed.

`{{` and `}}` write literal braces. Dotted names (`{a.b}`) reach into nested dicts.
Values from records are inserted verbatim, so a record holding `{{ config }}` or
`{% for %}` comes out exactly as written.
"""

from __future__ import annotations

import json
import re
from typing import Any

_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][\w.]*)\}")


class MissingField(KeyError):
    """A placeholder names a field the record does not have."""

    def __init__(self, field: str) -> None:
        self.field = field
        super().__init__(field)


def fields(template: str) -> list[str]:
    """The top-level field names a template reads, in order of appearance."""
    names = [m.group(1).split(".")[0] for m in _TOKEN.finditer(template) if m.group(1)]
    return list(dict.fromkeys(names))


def _lookup(record: dict[str, Any], dotted: str) -> Any:
    value: Any = record
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise MissingField(dotted)
        value = value[part]
    return value


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def render(template: str, record: dict[str, Any]) -> str:
    """Fill `template` from `record` in a single pass."""

    def substitute(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        return _text(_lookup(record, match.group(1)))

    return _TOKEN.sub(substitute, template)
