"""Training-data shapes: TRL's SFT `messages`, Alpaca `instruction`/`input`/`output`, and
TRL's process-reward (stepwise supervision) `prompt`/`completions`/`labels`."""

from __future__ import annotations

from typing import Any

from synthaug.records import Record

_INSTRUCTION = ("instruction", "question", "prompt", "problem")
_OUTPUT = ("output", "response", "answer", "solution", "generation", "story", "text")


def _first(record: Record, names: tuple[str, ...]) -> str | None:
    return next((str(record[n]) for n in names if isinstance(record.get(n), str)), None)


def step_labelled(record: Record) -> bool:
    """True for process-supervision data: a solution's `steps` with one label each."""
    return isinstance(record.get("steps"), list) and isinstance(record.get("labels"), list)


def to_alpaca(record: Record) -> dict[str, Any] | None:
    """{instruction, input, output} from a record, or None if it has no instruction/output.

    A step-labelled record (e.g. from `step-labels`) without `messages` is None: it is reward
    model data whose solution may be wrong (its labels say where), not an answer to imitate,
    and its `answer` field is the bare gold answer; `--format prm` exports it.
    """
    if isinstance(record.get("messages"), list):
        turns = record["messages"]
        users = [t["content"] for t in turns if t.get("role") == "user"]
        answers = [t["content"] for t in turns if t.get("role") == "assistant"]
        if users and answers:
            return {"instruction": users[0], "input": "", "output": answers[0]}
        return None
    if step_labelled(record):
        return None
    instruction, output = _first(record, _INSTRUCTION), _first(record, _OUTPUT)
    if instruction is None or output is None:
        return None
    return {"instruction": instruction, "input": str(record.get("input") or ""),
            "output": output}


def to_sft(record: Record) -> dict[str, Any] | None:
    """{messages: [...]} (with a system turn when the record has one), or None (also for a
    step-labelled record without `messages`, as `to_alpaca`)."""
    if isinstance(record.get("messages"), list):
        return {"messages": record["messages"]}
    alpaca = to_alpaca(record)
    if alpaca is None:
        return None
    user = alpaca["instruction"] + (f"\n\n{alpaca['input']}" if alpaca["input"] else "")
    messages = [{"role": "user", "content": user},
                {"role": "assistant", "content": alpaca["output"]}]
    system = record.get("system_message")
    if isinstance(system, str) and system:
        messages.insert(0, {"role": "system", "content": system})
    return {"messages": messages}


def to_prm(record: Record) -> dict[str, Any] | None:
    """{prompt, completions, labels}: a problem, its solution steps and one bool per step.

    Takes records already in that shape, or step-labelled ones (`steps` and `labels` beside
    the problem, e.g. from `step-labels`); None for any other record.
    """
    prompt = record.get("prompt") if isinstance(record.get("prompt"), str) else \
        _first(record, _INSTRUCTION)
    steps = record.get("completions", record.get("steps"))
    labels = record.get("labels")
    if prompt is None or not isinstance(steps, list) or not isinstance(labels, list):
        return None
    if len(steps) != len(labels) or not steps:
        return None
    if not all(isinstance(s, str) for s in steps):
        return None
    return {"prompt": prompt, "completions": steps, "labels": [bool(v) for v in labels]}
