"""Every built-in recipe runs end to end against an OpenAI-compatible URL, and is tagged."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from synthaug import registry
from synthaug.pipeline import load_recipe
from synthaug.testing import FakeOpenAIServer, Reply
from tests.conftest import run, write_jsonl
from tests.recipe_helpers import prompt_of, recipe_pipeline

ANY = ("1. rivers and lakes\n2. mountains and valleys\n3. clouds and rain\n4. deserts\n"
       "5. forests\nQuestion: What is a river?\nAnswer: A river is water flowing in a channel.\n"
       "Problem: Sum a list.\nSolution: use sum().\nSection: intro\nExercises: 1+1\n"
       "Instruction: Add numbers\nInput: 1 2\nConstraints: none\nResponse: 3\n"
       "Summary: A river is water flowing.\nOutput: done")
STAGES = {"data-preparation", "pre-training", "fine-tuning", "instruction-tuning",
          "preference-alignment"}


def reply(body: dict[str, Any]) -> Reply:
    text = prompt_of(body)
    if "Score (1-5)" in text:
        return Reply(text="5 good")
    if "Translate each part" in text:
        return Reply(text="Instruction: Ajoute\nInput: 1 2\nOutput: 3")
    if "Classification:" in text[-20:]:
        return Reply(text=" No")
    if "\n\nPassage: " in text:  # grounded recipes: an answer built from the passage's words
        passage = text.rsplit("\n\nPassage: ", 1)[1].split("\n\n")[0]
        return Reply(text=f"Question: What does it say?\nAnswer: {passage}\nSummary: {passage}")
    if "The story must use the verb" in text:  # TinyStories: a story with the three words
        return Reply(text="Once " + " and ".join(re.findall(r'"([^"]+)"', text)) + ".")
    return Reply(text=ANY)


@pytest.mark.parametrize("name", sorted(registry.recipe_files()))
def test_recipe_runs_against_a_url(name: str, tmp_path: Path) -> None:
    recipe = load_recipe(registry.recipe_files()[name])
    assert recipe.description and recipe.tags.approach and recipe.tags.function
    assert all(s in STAGES or s.startswith("application/") for s in recipe.tags.stage)
    assert recipe.cites or name == "text-generation"
    sets: dict[str, dict[str, Any]] = {}
    for step in recipe.steps:
        label = step.name or step.use
        if step.use in ("combinations", "repeat", "taxonomy-sample", "magpie"):
            sets[label] = {"count": 2}
        if step.use == "self-instruct-instructions":
            sets[label] = {"target": 2, "prompts_per_round": 1}
        if step.use == "evol-instruct":
            sets[label] = {"rounds": 1}
    data = None
    if name == "text-generation":
        data = write_jsonl(tmp_path / "in.jsonl", [{"instruction": "hi"}])
    with FakeOpenAIServer(reply) as server:
        state = run(recipe_pipeline(name, server.url, sets=sets), tmp_path / "out", data,
                    limit=2)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["recipe"] == name
    assert state.clients and sum(c.calls for c in state.clients.values()) > 0
    assert state.steps[-1].outputs > 0, "the last step made no records"
    assert state.written == state.steps[-1].outputs


def test_recipe_docs_are_generated_from_the_code() -> None:
    import importlib.util

    root = Path(__file__).parents[1]
    spec = importlib.util.spec_from_file_location("make_recipe_docs",
                                                  root / "docs" / "make_recipe_docs.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, path in registry.recipe_files().items():
        committed = (root / "docs" / "recipes" / f"{name}.md").read_text(encoding="utf-8")
        assert module.page(name, path) == committed, f"run python docs/make_recipe_docs.py ({name})"
        assert "135M" in committed  # every page shows a labelled embedded-model sample
