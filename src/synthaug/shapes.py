"""Training-data shapes: TRL's SFT `messages`, Alpaca `instruction`/`input`/`output`, TRL's
process-reward (stepwise supervision) `prompt`/`completions`/`labels`, and TRL's preference
shapes in conversational form: DPO/ORPO `prompt`/`chosen`/`rejected`, reward modeling
`chosen`/`rejected` (implicit prompt), KTO `prompt`/`completion`/`label`."""

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


def _prompt_turns(record: Record) -> list[dict[str, str]] | None:
    """The conversation a preference pair answers: `prompt` or `messages` turns up to their
    last user turn, else the instruction (and input) as one user turn after the record's
    system message; None when there is none or the turns are malformed."""
    for name in ("prompt", "messages"):
        turns = record.get(name)
        if not isinstance(turns, list) or not turns:
            continue
        if not all(isinstance(t, dict) and isinstance(t.get("role"), str)
                   and isinstance(t.get("content"), str) for t in turns):
            return None  # malformed turns: no row rather than a guessed prompt
        users = [i for i, t in enumerate(turns) if t["role"] == "user"]
        if not users:
            return None
        # up to the last user turn: an answer already in the conversation is not prompt
        return [{"role": t["role"], "content": t["content"]} for t in turns[: users[-1] + 1]]
    instruction = _first(record, _INSTRUCTION)
    if instruction is None:
        return None
    given = record.get("input")
    turns = [{"role": "user", "content": instruction + (f"\n\n{given}" if isinstance(
        given, str) and given else "")}]
    system = record.get("system_message")
    if isinstance(system, str) and system:
        turns.insert(0, {"role": "system", "content": system})
    return turns


def _pair(record: Record) -> tuple[list[dict[str, str]], str, str] | None:
    prompt = _prompt_turns(record)
    chosen, rejected = record.get("chosen"), record.get("rejected")
    if prompt is None or not isinstance(chosen, str) or not isinstance(rejected, str):
        return None
    return prompt, chosen, rejected


def _said(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def to_dpo(record: Record) -> dict[str, Any] | None:
    """{prompt, chosen, rejected} as TRL's DPO/ORPO trainers read them (conversational,
    explicit prompt), from a record with `chosen`/`rejected` texts; None otherwise."""
    pair = _pair(record)
    if pair is None:
        return None
    prompt, chosen, rejected = pair
    return {"prompt": prompt, "chosen": _said(chosen), "rejected": _said(rejected)}


def to_rm(record: Record) -> dict[str, Any] | None:
    """{chosen, rejected}: whole conversations (implicit prompt), as TRL's RewardTrainer
    reads them; None for a record without a pair."""
    pair = _pair(record)
    if pair is None:
        return None
    prompt, chosen, rejected = pair
    return {"chosen": prompt + _said(chosen), "rejected": prompt + _said(rejected)}


def to_kto(record: Record) -> list[dict[str, Any]]:
    """KTO rows {prompt, completion, label}: a pair gives a desirable (chosen) and an
    undesirable (rejected) row; a record with `completion` text and a bool `label` gives
    one row; any other record none."""
    pair = _pair(record)
    if pair is not None:
        prompt, chosen, rejected = pair
        return [{"prompt": prompt, "completion": _said(chosen), "label": True},
                {"prompt": prompt, "completion": _said(rejected), "label": False}]
    prompt_turns = _prompt_turns(record)
    completion, label = record.get("completion"), record.get("label")
    if prompt_turns is None or not isinstance(completion, str) or not isinstance(label, bool):
        return []
    return [{"prompt": prompt_turns, "completion": _said(completion), "label": label}]
