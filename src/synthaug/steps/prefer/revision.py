"""What the revision steps share (Constitutional AI's critique and revision, Self-Refine,
CLAIR): user files of examples read with file, line and field in errors, the check that a
revision changed its input, the minimality of an edit, and the fields of a revised record.

A revised record keeps its prompt as chat turns in `prompt` (so `--format dpo|kto|rm` read
the prompt from it), the final text as the SFT answer in `messages`, and the pair
`chosen` (the revision) / `rejected` (the text it revised).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from synthaug import template
from synthaug.errors import ConfigError, ParseError
from synthaug.io import data_file

_WORD = re.compile(r"\w+|[^\w\s]")
_PREAMBLE = re.compile(r"^here(?:'s| is) (?:the|my|an?) (?:improved|revised|refined|rewritten|"
                       r"new) (?:response|answer|reply|version)\W*\n", re.IGNORECASE)


def _source(name: str) -> Path:
    """A path, or a data file shipped in synthaug/data."""
    return Path(name) if Path(name).is_file() else data_file(name)


def _yaml_items(text: str, name: str) -> list[tuple[int, Any]]:
    """(line, item) for each entry of a YAML list (top level, or under `key` of a mapping)."""
    try:
        node = yaml.compose(text)
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", file=name) from None
    if isinstance(value, dict) and len(value) == 1 and node is not None:
        key = next(iter(value))
        value = value[key]
        node = next(v for k, v in node.value if k.value == key)
    if not isinstance(value, list) or node is None:
        raise ConfigError("expected a list of entries (or a mapping with one list)", file=name)
    return [(item.start_mark.line + 1, entry) for item, entry in zip(node.value, value,
                                                                      strict=True)]


def _jsonl_items(text: str, name: str) -> list[tuple[int, Any]]:
    items = []
    for line, raw in enumerate(text.splitlines(), 1):
        if raw.strip():
            try:
                items.append((line, json.loads(raw)))
            except ValueError as exc:
                raise ConfigError(f"line {line}: not a JSON line ({exc})", file=name) from None
    return items


def load_entries(name: str, fields: tuple[str, ...]) -> list[dict[str, str]]:
    """The entries of a JSONL or YAML file (a path or a shipped data file), each an object
    whose `fields` are non-empty strings; ConfigError naming the file, line and field."""
    try:
        text = _source(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the file: {exc}", file=name) from None
    items = _jsonl_items(text, name) if name.endswith(".jsonl") else _yaml_items(text, name)
    if not items:
        raise ConfigError("the file has no entries", file=name)
    found = []
    for line, item in items:
        if not isinstance(item, dict):
            raise ConfigError(f"line {line}: expected an object with {', '.join(fields)}",
                              file=name)
        for key in fields:
            if not isinstance(item.get(key), str) or not item[key].strip():
                raise ConfigError(f"line {line}: '{key}' must be a non-empty string",
                                  file=name, field=key)
        found.append({k: v.strip() if isinstance(v, str) else v for k, v in item.items()})
    return found


def cleaned(text: str, *labels: str) -> str:
    """The reply without surrounding space, a leading label the model echoed ('Revision:',
    '**Critique:**') or a 'Here is the improved response:' line."""
    text = _PREAMBLE.sub("", text.strip()).strip()
    for label in labels:
        text = re.sub(rf"^\W{{0,4}}{label}\W{{0,4}}:\W{{0,4}}", "", text, flags=re.I).strip()
    return text


def unchanged(before: str, after: str) -> str | None:
    """Why a revision is unusable ('empty revision', 'revision identical to its input'),
    or None when it changed the text (whitespace alone is no change)."""
    if not after.strip():
        return "empty revision"
    if " ".join(before.split()) == " ".join(after.split()):
        return "revision identical to its input"
    return None


def tokens(text: str) -> list[str]:
    """Words and punctuation marks, the units the edit measures count."""
    return _WORD.findall(text)


def edit_distance(one: list[str], two: list[str]) -> int:
    """Levenshtein distance between two token lists (insert, delete, substitute)."""
    try:
        from rapidfuzz.distance import Levenshtein
    except ImportError:  # the `verify` extra is absent: the same distance, computed here
        previous = list(range(len(two) + 1))
        for i, a in enumerate(one, 1):
            current = [i]
            for j, b in enumerate(two, 1):
                current.append(min(previous[j] + 1, current[j - 1] + 1,
                                   previous[j - 1] + (a != b)))
            previous = current
        return previous[-1]
    return int(Levenshtein.distance(one, two))


def minimality(original: str, revision: str) -> dict[str, float | int]:
    """How small an edit is: token edit distance, edit similarity (1 - distance / longer
    length; 1 = identical) and Jaccard similarity of the token sets."""
    one, two = tokens(original), tokens(revision)
    distance = edit_distance(one, two)
    longer = max(len(one), len(two)) or 1
    union = set(one) | set(two)
    return {"token_edit_distance": distance,
            "token_edit_similarity": round(1 - distance / longer, 4),
            "jaccard": round(len(set(one) & set(two)) / len(union), 4) if union else 1.0}


def revised_fields(prompt: str, original: str, final: str) -> dict[str, Any]:
    """The prompt as chat turns, the final text as the SFT answer, and the pair."""
    turn = {"role": "user", "content": prompt}
    return {"prompt": [turn], "messages": [turn, {"role": "assistant", "content": final}],
            "chosen": final, "rejected": original}


def required(text: str, what: str) -> str:
    """`text`, or ParseError when the model wrote nothing."""
    if not text.strip():
        raise ParseError(f"the model wrote no {what}", raw=[text])
    return text


def prompt_requirements(prompt_template: str, response_field: str | None) -> dict[str, type]:
    """The fields a revision step reads: its prompt template's, and the response to revise
    when it is taken from the record rather than generated."""
    found: dict[str, type] = dict(template.requirements(prompt_template))
    if response_field:
        found[response_field] = str
    return found
