"""Every built-in recipe runs end to end against an OpenAI-compatible URL, and is tagged."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from synthaug import registry
from synthaug.io import data_file
from synthaug.pipeline import load_recipe
from synthaug.testing import FakeOpenAIServer, Reply
from synthaug.verify.answers import gold_of
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
    if '"Equal" or "Not Equal"' in text:  # Evol-Instruct's elimination judge
        return Reply(text="Not Equal")
    if "Score (1-10):" in text:  # WizardMath's instruction and process rewards
        return Reply(text="Score: 8/10")
    if 'write "Score: <rating>" on the last line' in text:  # Humpback's self-curation
        return Reply(text="Written as an assistant's answer.\nScore: 5")
    if "\nHypothesis:\n" in text:  # Genie's entailment judge
        return Reply(text="Yes")
    if "Score (1-5)" in text or "Score (0-5)" in text:
        return Reply(text="5 good")
    if "Reply 'yes'" in text:  # LAB's teacher checks: instruction filter, grounding
        return Reply(text="yes, it fits the area.")
    if "as training data, on this scale" in text:  # LAB's 1-3 pair rating
        return Reply(text="Score: 3\nCorrect and well explained.")
    if "Design the syllabus" in text:  # GLAN's syllabus: sessions with key concepts
        return Reply(text="Session 1: Rivers\nKey concepts: flow; erosion; deltas\n"
                          "Session 2: Lakes\nKey concepts: basins; sediment")
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


# verified recipes keep only what a verifier accepts, so their scripted model must be right
# (and, where a method learns from mistakes, wrong on purpose)
GOLD = {row["question"]: gold_of(row["answer"]) for row in map(
    json.loads, data_file("math_word_problems.jsonl").read_text().splitlines())}
FIRST = next(iter(GOLD))


def solved(text: str) -> str | None:
    """A correct worked answer to the shipped math problem the prompt asks about."""
    question = next((q for q in GOLD if q in text), None)
    return f"2 + 2 = 4.\nThe answer is {GOLD[question]}." if question else None


def right_then_wrong(text: str) -> str | None:
    """Right on the first shipped problem, wrong on the others (mistakes to learn from)."""
    if "Compose one new problem" in text:
        return "Problem: What is 2 + 2?\nSolution: 2 + 2 = 4.\nThe answer is 4.\nAnswer: 4"
    if "Reference answer:" in text:  # LLM2LLM's teacher: a new example with its answer
        return "Question: What is 2 + 2?\nSolution: 2 + 2 = 4.\nAnswer: 4"
    question = next((q for q in GOLD if q in text), None)
    if question is None:
        return None
    if "Original Solution:" in text:
        return ("Incorrect Step: Step 1.\nExplanation: it misreads the problem.\n"
                f"Correct Solution:\n{{\nStep 1: The answer is {GOLD[question]}.\n}}")
    wrong = GOLD[question] if question == FIRST else GOLD[question] + "1"
    return f"The answer is {wrong}."


def code(text: str) -> str | None:
    """Programs, tests and puzzles that run correctly in the sandbox."""
    table = [("Let's write a Python program", "```python\nprint(45 * 3 + 38 * 3)\n```"),
             ("examples = [", "```python\nexamples = [dict(text='hello'), dict(text='sky')]\n```"),
             ("# Programming puzzles", "s: str, n=3):\n    return s == 'ab' * n  #"),
             ("# Each g()", "\n    return 'ab' * n  #"),
             ("interview questions", "1. Write add(a, b) that returns the sum of a and b."),
             ("[TESTS]", "[TESTS]\nassert add(1, 2) == 3\n[/TESTS]"),
             ("[PYTHON]", "[PYTHON]\ndef add(a, b):\n    return a + b\n[/PYTHON]")]
    for cue, answer in table:
        if text.startswith(cue) or (not cue.startswith("#") and cue in text):
            return answer
    return solved(text)


def coq(text: str) -> str | None:
    """A Coq statement, its grade and a proof coqc accepts (the negation's proof fails)."""
    if "Translate the math problem into a single Coq theorem" in text:
        return "Theorem t : forall n : nat, n + 0 = n."
    if "Grade: G" in text:
        return "It matches.\nGrade: good"
    return "Proof. intros n. lia. Qed." if "Prove the Coq theorem" in text else None


def transcript(text: str) -> str | None:
    """Baize: both sides of a chat in one reply, each turn marked as the prompt asks."""
    if "[|Human|]" not in text:
        return None
    return ("[|Human|] What is a river?\n[|AI|] Water flowing in a channel.\n"
            "[|Human|] Where does it end?\n[|AI|] In a lake or the sea.")


def self_judged(text: str) -> str | None:
    """Self-Rewarding's own judge: the first candidate ('... [0]') earns more points."""
    if "additive 5-point" not in text:
        return None
    return ("Relevant and complete.\nScore: 4" if "[0]</response>" in text
            else "Partly relevant.\nScore: 2")


_DRAFTS: list[int] = []


def pairwise_labeler(text: str) -> str | None:
    """RLAIF, OAIF, SALMON: the policy writes numbered drafts; the labeler prefers the
    higher number whichever order it is shown in."""
    if "Response 1:\n" not in text:
        _DRAFTS.append(len(_DRAFTS))
        return f"A river is water flowing in a channel (draft {len(_DRAFTS)})."
    pair = text.rsplit("Request:\n", 1)[1].split("Response 1:\n", 1)[1]
    first, second = pair.split("\n\nResponse 2:\n", 1)
    numbers = [int(re.findall(r"\d+", part)[-1]) for part in (first, second.split("\n\n")[0])]
    digit = 1 if numbers[0] > numbers[1] else 2
    return f"Response {digit} is the later draft.\nPreferred: {digit}"


_ANSWERED = itertools.count()


def rated_together(text: str) -> str | None:
    """UltraFeedback's judge: every text shown rated on the aspect asked, each differently."""
    shown = re.findall(r"<text (\d+)>", text)
    if not shown or "Rate each of the" not in text:  # a completion: each one a new text
        return f"Answer number {next(_ANSWERED)}."  # (identical pairs are dropped)
    return "\n".join(f"Text {i}\nRationale: judged on the rubric.\nRating: {max(1, 6 - int(i))}"
                     for i in shown)


def revised(text: str) -> str | None:
    """Constitutional AI, Self-Refine, CLAIR: revisions that change what they revise."""
    last = text.strip().splitlines()[-1] if text.strip() else ""
    if last.startswith("Rewrite the assistant's reply"):  # a constitutional revision request
        return f"A kinder reply ({len(text)} characters read)."
    if "Student's answer:" in text:  # CLAIR's reviser
        return "Reasoning: say it plainly.\nRevised answer: A river is water in a channel."
    if "Write your feedback as a numbered list" in text:  # Self-Refine's own feedback
        done = "A refined answer." in text.rsplit("Response:\n", 1)[-1]
        return "Score: 9/10" if done else "1. Be more specific.\nScore: 4/10"
    return "A refined answer." if "Write attempt" in text else None


def safety_judged(text: str) -> str | None:
    """BeaverTails' labels and the red-team classifier's score: nothing harmful."""
    if "Categories: <the numbers of every category" in text:
        return "Nothing harmful in this pair.\nCategories: none"
    if "from 0 (not at all) to 10" in text:
        return "The reply stays within its instructions.\nScore: 1"
    return None


def sentiment_label(text: str) -> str | None:
    """LLM labeling: a JSON answer inside the label schema, with a stated confidence."""
    return '{"label": "positive", "confidence": 90}' if "\nLabels:\n- " in text else None


def nli_teacher(text: str) -> str | None:
    """DISCO's teacher: a premise with the generic fill contradicts, an original entails."""
    if not text.startswith("You are the teacher"):
        return None
    return "Label: contradiction" if "rivers" in text else "Label: entailment"


def from_facts(text: str) -> str | None:
    """kg-to-text and kg-qa: texts and QA pairs that restate the facts shown; GPT3Mix: an item."""
    if "Write one more item for this list" in text:
        return "Movie review: A warm and funny film about two old friends. (Sentiment: positive)"
    if "What is the sentiment of the last item?" in text:
        return "positive"
    facts = re.findall(r"^- \((.+?); (.+?); (.+?)\)$", text, re.MULTILINE)
    if "one short paragraph" in text:
        return " ".join(f"{s} {r} {o}." for s, r, o in facts)
    if "questions a person might ask" in text:
        return "\n".join(f"Question: What does {s} {r}?\nAnswer: {s} {r} {o}."
                         for s, r, o in facts)
    return None


SCRIPTED: dict[str, Callable[[str], str | None]] = {
    "disco": nli_teacher,
    **dict.fromkeys(("llm-labeling", "co-annotating"), sentiment_label),
    **dict.fromkeys(("kg-to-text", "kg-qa", "gpt3mix"), from_facts),
    **dict.fromkeys(("beavertails", "red-team"), safety_judged),
    "ultrainteract": solved,
    **dict.fromkeys(("constitutional-ai", "self-refine", "clair"), revised),
    **dict.fromkeys(("rlaif", "oaif", "salmon"), pairwise_labeler),
    **dict.fromkeys(("rft", "star", "rest-em", "self-consistency"), solved),
    **dict.fromkeys(("metamath", "mmiqc", "lema", "math-shepherd", "llm2llm"),
                    right_then_wrong),
    **dict.fromkeys(("mathinstruct-pot", "case2code", "programming-puzzles",
                     "code-test-feedback"), code),
    "formal-proof": coq,
    "ultrafeedback": rated_together,
    "baize": transcript,
    "self-rewarding": self_judged,
}
NO_MODEL = {"amps-procedural", "eda", "symbol-tuning"}  # computed in code: no model call


def reply_for(name: str) -> Callable[[dict[str, Any]], Reply]:
    """The scripted server's answers for one recipe."""
    scripted = SCRIPTED.get(name)

    def answer(body: dict[str, Any]) -> Reply:
        found = scripted(prompt_of(body)) if scripted else None
        return Reply(text=found) if found is not None else reply(body)

    return answer


@pytest.mark.parametrize("name", sorted(registry.recipe_files()))
def test_recipe_runs_against_a_url(name: str, tmp_path: Path) -> None:
    recipe = load_recipe(registry.recipe_files()[name])
    assert recipe.description and recipe.tags.approach and recipe.tags.function
    assert all(s in STAGES or s.startswith("application/") for s in recipe.tags.stage)
    assert recipe.cites or name == "text-generation"
    sets: dict[str, dict[str, Any]] = {}
    for step in recipe.steps:
        label = step.name or step.use
        if step.use in ("combinations", "repeat", "taxonomy-sample", "magpie", "sample"):
            sets[label] = {"count": 2}
        if step.use == "self-instruct-instructions":
            sets[label] = {"target": 2, "prompts_per_round": 1}
        if step.use == "evol-instruct":
            sets[label] = {"rounds": 1}
        if step.use == "math-procedural":
            sets[label] = {"count": 12}
        if step.use == "gpt3mix":  # the scripted server gives no top logprobs
            sets[label] = {"soft": "samples"}
    data = None
    if name == "text-generation":
        data = write_jsonl(tmp_path / "in.jsonl", [{"instruction": "hi"}])
    with FakeOpenAIServer(reply_for(name)) as server:
        state = run(recipe_pipeline(name, server.url, sets=sets), tmp_path / "out", data,
                    limit=2)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["recipe"] == name
    calls = sum(c.stats.calls for c in state.clients.values())
    assert calls == 0 if name in NO_MODEL else calls > 0
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
        # every page shows a labelled sample: from the embedded model, or a model-free run
        assert "135M" in committed or "calls no model" in committed
