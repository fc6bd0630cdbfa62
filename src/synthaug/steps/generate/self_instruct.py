"""Self-Instruct (Wang et al., 2023): grow a task pool from human-written seeds.

Three steps: new instructions from 8 in-context tasks (6 human + 2 generated) with
ROUGE-L and keyword screening, round by round; a yes/no classification check; and
instance generation, output-first for classification tasks and input-first otherwise.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Literal

from synthaug.errors import ConfigError, ParseError
from synthaug.records import Record, content, source_record
from synthaug.steps.base import (
    Global,
    LLMOptions,
    LLMStep,
    Requirements,
    Rounds,
    RoundsOptions,
    StepOptions,
)
from synthaug.steps.context import StepContext
from synthaug.steps.generate.similarity import RougePool
from synthaug.steps.llm import Prompt, Reply, Sampling, Uses

NOT_TEXT = ("image", "images", "graph", "graphs", "picture", "pictures", "file", "files",
            "map", "maps", "draw", "plot", "go to", "video", "audio", "music", "flowchart",
            "diagram")
_TASK_MARK = re.compile(r"(?:^|\n)\s*(?:Task\s*\d+\s*[:.)]|\d{1,2}\s*[.)])\s*", re.IGNORECASE)


def load_seed_tasks(path: str | None = None) -> list[dict[str, Any]]:
    """Seed tasks (instruction, instances, is_classification) from JSONL; built-in by default."""
    try:
        if path:
            text = Path(path).read_text(encoding="utf-8")
        else:
            text = resources.files("synthaug.data").joinpath(
                "self_instruct_seeds.jsonl").read_text(encoding="utf-8")
        tasks = [json.loads(line) for line in text.splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read seed tasks: {exc}", file=path,
                          field="seed_tasks") from None
    for number, task in enumerate(tasks, start=1):
        if not isinstance(task, dict) or not isinstance(task.get("instruction"), str):
            raise ConfigError(f"line {number}: a seed task needs a string 'instruction'",
                              file=path, field="seed_tasks")
    return tasks


def split_tasks(reply: str, truncated: bool) -> list[str]:
    """The task texts in a continuation of a numbered task list."""
    parts = [" ".join(p.split()) for p in _TASK_MARK.split(reply)]
    tasks = [p for p in parts if p]
    if truncated and tasks:
        tasks.pop()  # the last task was cut off mid-sentence
    return tasks


def screen(text: str, blocklist: Iterable[str], min_words: int, max_words: int) -> str | None:
    """Why an instruction is unfit for a text model, or None if it passes."""
    words = text.split()
    if len(words) < min_words:
        return "too short"
    if len(words) > max_words:
        return "too long"
    lowered = f" {text.lower()} "
    for word in blocklist:
        if re.search(rf"\b{re.escape(word)}\b", lowered):
            return f"not a text task ({word})"
    if not text[0].isalnum():
        return "starts with punctuation"
    if not text[0].isascii():
        return "starts with a non-English character"
    return None


class InstructionOptions(RoundsOptions):
    """Options of self-instruct-instructions."""

    backend: str = "default"
    rounds: int = 20
    target: int = 50
    prompts_per_round: int = 8
    human_examples: int = 6
    machine_examples: int = 2
    rouge_threshold: float = 0.7
    blocklist: list[str] = list(NOT_TEXT)
    min_words: int = 3
    max_words: int = 150
    seed_tasks: str | None = None
    mode: Literal["completion", "chat"] = "completion"
    sampling: Sampling = Sampling(temperature=0.7, top_p=0.5, stop=("\n\n\n",))


class SelfInstructInstructions(Rounds[InstructionOptions]):
    """New instructions from a growing pool; near-copies and non-text tasks are dropped."""

    Options: ClassVar[type[StepOptions]] = InstructionOptions

    def __init__(self, options: StepOptions | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self.seeds = load_seed_tasks(self.options.seed_tasks)  # a bad file fails up front

    def provides(self) -> set[str]:
        return {"instruction", "round"}

    def uses(self) -> list[Uses]:
        return [Uses(self.options.backend, raw_completion=self.options.mode == "completion")]

    async def start(self, pool: list[Record], ctx: StepContext) -> None:
        given = [r for r in pool if isinstance(r.get("instruction"), str) and r["instruction"]]
        tasks = given or [source_record(t, source="self-instruct-seeds", index=i,
                                        recipe=ctx.recipe) for i, t in enumerate(self.seeds)]
        self.human: list[Record] = tasks
        self.machine: list[Record] = []
        self.pool = RougePool([str(t["instruction"]) for t in tasks])

    def build_prompt(self, examples: list[Record]) -> Prompt:
        """The task-list prompt over the in-context examples (the model writes the next task)."""
        lines = "".join(f"Task {i}: {t['instruction']}\n" for i, t in enumerate(examples, 1))
        head = ("Here is a list of varied tasks that someone could ask a text-only assistant "
                "to do. Each is self-contained. Keep adding new tasks that differ from "
                "those above in topic and kind.\n\n")
        text = f"{head}{lines}Task {len(examples) + 1}:"
        if self.options.mode == "chat":
            return [{"role": "user", "content": text}]
        return text

    def _examples(self, index: int, j: int, ctx: StepContext) -> list[Record]:
        rng = ctx.rng(None, "examples", index, j)
        total = self.options.human_examples + self.options.machine_examples
        machines = rng.sample(self.machine, min(self.options.machine_examples, len(self.machine)))
        humans = rng.sample(self.human, min(total - len(machines), len(self.human)))
        examples = humans + machines
        rng.shuffle(examples)
        return examples

    async def round(self, index: int, ctx: StepContext) -> tuple[list[Record], bool]:
        batches = [self._examples(index, j, ctx) for j in range(self.options.prompts_per_round)]
        replies = await asyncio.gather(*(
            ctx.attempt(ctx.generate(self.build_prompt(batch), self.options.sampling,
                                     seed=ctx.seed_for(None, "ask", index, j)),
                        {"round": index, "prompt": j})
            for j, batch in enumerate(batches)))
        accepted: list[Record] = []
        for j, reply in enumerate(replies):
            if reply is None:
                continue
            for k, text in enumerate(split_tasks(reply.text, reply.truncated)):
                record = ctx.derive(batches[j], {"instruction": text, "round": index},
                                    f"{index}.{j}.{k}", reply)
                if self._accept(record, ctx):
                    accepted.append(record)
                    if len(self.machine) >= self.options.target:
                        return accepted, True
        return accepted, False

    def _accept(self, record: Record, ctx: StepContext) -> bool:
        text = str(record["instruction"])
        o = self.options
        reason = screen(text, o.blocklist, o.min_words, o.max_words)
        if reason:
            ctx.drop(record, reason.split(" (")[0], reason)
            return False
        score, nearest = self.pool.most_similar(text)
        if score >= o.rouge_threshold:
            ctx.drop(record, f"rouge-l >= {o.rouge_threshold}",
                     f"ROUGE-L {score:.2f} with: {nearest}")
            return False
        self.pool.add(text)
        self.machine.append(record)
        return True


_CLASSIFY_HEAD = ("Decide whether each task is a classification task: its answer is one of a "
                  "small, fixed set of labels.\n\n")


class ClassifyOptions(LLMOptions):
    """Options of self-instruct-classify."""

    sampling: Sampling = Sampling(temperature=0.0, max_tokens=3)
    examples: int = 12
    seed_tasks: str | None = None


class SelfInstructClassify(LLMStep[ClassifyOptions]):
    """Asks whether each instruction is a classification task (few-shot yes/no)."""

    Options: ClassVar[type[StepOptions]] = ClassifyOptions
    raw = True

    def __init__(self, options: StepOptions | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        tasks = load_seed_tasks(self.options.seed_tasks)
        yes = [t for t in tasks if t["is_classification"]]
        no = [t for t in tasks if not t["is_classification"]]
        half = self.options.examples // 2
        mixed = [t for pair in zip(no[:half], yes[:half], strict=False) for t in pair]
        self.shots = "".join(
            f"Task: {t['instruction']}\nClassification: "
            f"{'Yes' if t['is_classification'] else 'No'}\n\n" for t in mixed)

    def requires(self) -> Requirements:
        return {"instruction": str}

    def provides(self) -> set[str]:
        return {"is_classification"}

    def prompt(self, record: Record, ctx: StepContext) -> Prompt:
        return f"{_CLASSIFY_HEAD}{self.shots}Task: {record['instruction']}\nClassification:"

    def parse(self, record: Record, reply: Reply, ctx: StepContext) -> Iterable[Record]:
        answer = reply.text.strip().lower()
        yield {**content(record), "is_classification": answer.startswith("yes")}


_INPUT_FIRST = ("Write examples for each task. An example has an Input (left out when the task "
                "needs none) and the correct Output.\n\n")
_OUTPUT_FIRST = ("Each task below sorts inputs into a few labels. For each task, list its "
                 "possible labels and write one input that belongs to each label.\n\n")


def _shot_input_first(task: dict[str, Any]) -> str:
    parts = [f"Task: {task['instruction']}"]
    for i, inst in enumerate(task["instances"], 1):
        body = f"Input: {inst['input']}\n" if inst["input"] else ""
        parts.append(f"Example {i}\n{body}Output: {inst['output']}")
    return "\n".join(parts) + "\n\n"


def _shot_output_first(task: dict[str, Any]) -> str:
    parts = [f"Task: {task['instruction']}"]
    for inst in task["instances"]:
        parts.append(f"Class label: {inst['output']}\nInput: {inst['input']}")
    return "\n".join(parts) + "\n\n"


def parse_input_first(reply: str) -> list[tuple[str, str]]:
    """(input, output) pairs from an input-first continuation."""
    body = reply.split("\nTask:")[0]
    pairs = []
    for chunk in re.split(r"(?:^|\n)\s*Example\s*\d+\s*:?\s*\n?", body):
        if not chunk.strip():
            continue
        match = re.search(r"Output\s*:(.*)", chunk, re.DOTALL)
        if match:
            given = re.search(r"Input\s*:(.*?)(?=Output\s*:)", chunk, re.DOTALL)
            output = re.split(r"\n\s*(?:Input|Output)\s*:", match.group(1))[0]
            pairs.append(((given.group(1) if given else "").strip(), output.strip()))
        elif not pairs:
            pairs.append(("", chunk.strip()))  # a task with no input: the output directly
    return pairs


def parse_output_first(reply: str) -> list[tuple[str, str]]:
    """(input, label) pairs from an output-first continuation (it starts after 'Class label:')."""
    body = ("Class label:" + reply).split("\nTask:")[0]
    pairs = []
    for chunk in re.split(r"Class label\s*:", body):
        label, _, rest = chunk.strip().partition("\n")
        match = re.search(r"Input\s*:(.*)", rest, re.DOTALL)
        if label.strip() and match and match.group(1).strip():
            pairs.append((match.group(1).strip(), label.strip()))
    return pairs


class InstancesOptions(LLMOptions):
    """Options of self-instruct-instances."""

    sampling: Sampling = Sampling(temperature=0.0, max_tokens=200, stop=("\nTask:", "\n\n\n"))
    examples: int = 3
    seed_tasks: str | None = None


class SelfInstructInstances(LLMStep[InstancesOptions]):
    """Instances for each instruction: output-first for classification, input-first otherwise."""

    Options: ClassVar[type[StepOptions]] = InstancesOptions
    raw = True

    def __init__(self, options: StepOptions | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        tasks = load_seed_tasks(self.options.seed_tasks)
        self.clf_tasks = [t for t in tasks if t["is_classification"]]
        self.gen_tasks = [t for t in tasks if not t["is_classification"]]

    def requires(self) -> Requirements:
        return {"instruction": str}

    def provides(self) -> set[str]:
        return {"input", "output", "method"}

    def prompt(self, record: Record, ctx: StepContext) -> Prompt:
        rng = ctx.rng(record, "shots")
        if record.get("is_classification"):
            shots = rng.sample(self.clf_tasks, min(self.options.examples, len(self.clf_tasks)))
            return (_OUTPUT_FIRST + "".join(map(_shot_output_first, shots))
                    + f"Task: {record['instruction']}\nClass label:")
        shots = rng.sample(self.gen_tasks, min(self.options.examples, len(self.gen_tasks)))
        return (_INPUT_FIRST + "".join(map(_shot_input_first, shots))
                + f"Task: {record['instruction']}\nExample 1\n")

    def parse(self, record: Record, reply: Reply, ctx: StepContext) -> Iterable[Record]:
        clf = bool(record.get("is_classification"))
        pairs = parse_output_first(reply.text) if clf else parse_input_first(reply.text)
        if not pairs:
            raise ParseError("no instance found in the reply")
        method = "output-first" if clf else "input-first"
        base = {k: v for k, v in content(record).items() if k not in ("input", "output")}
        for given, output in pairs:
            yield {**base, "input": given, "output": output, "method": method}


class InstanceFilter(Global[StepOptions]):
    """Drops empty, degenerate and duplicate instances (the paper's instance screening)."""

    def __init__(self, options: StepOptions | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self._seen: set[tuple[str, str, str]] = set()

    def requires(self) -> Requirements:
        return {"instruction": str, "input": str, "output": str}

    def observe(self, record: Record, ctx: StepContext) -> Iterable[Record]:
        instruction, given, output = (" ".join(str(record[k]).split()).lower()
                                      for k in ("instruction", "input", "output"))
        if not output:
            ctx.drop(record, "empty output")
        elif output in (given, instruction):
            ctx.drop(record, "output repeats the input or instruction")
        elif (instruction, given, output) in self._seen:
            ctx.drop(record, "duplicate instance")
        else:
            self._seen.add((instruction, given, output))
            yield record
