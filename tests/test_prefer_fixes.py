"""Review fixes of the preference judges: a failed verdict waits for its record's other calls,
judge-rank's repeats and ties, judge-pair's direct win and ties, identical pairs, the prompt
the models were asked, judge-rate's shuffled shown order; against a real HTTP server."""

from __future__ import annotations

import itertools
import random
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from synthaug.pipeline import Pipeline, resolve_recipe
from synthaug.shapes import to_dpo
from synthaug.steps.context import StepContext
from synthaug.steps.prefer.rank import parse_ranking, shown_orders
from synthaug.testing import FakeOpenAIServer, Reply
from tests.conftest import read_jsonl, run, write_jsonl
from tests.recipe_helpers import prompt_of

GOOD, POOR = "ZGOOD answer", "ZPOOR answer"


def pipeline(tmp: Path, url: str, steps: list[dict[str, Any]]) -> Pipeline:
    """Roles `policy`, `judge` and `labeler`, each a model of the server at `url`."""
    roles = {"policy": "policy", "judge": "judge", "labeler": "judge"}
    recipe = {"name": "prefer-fixes", "input": "required", "steps": steps, "backends": {
        role: {"use": "openai", "with": {"base_url": url, "model": model, "concurrency": 8}}
        for role, model in roles.items()}}
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return Pipeline.from_recipe(*resolve_recipe(str(path)))


def one_step(tmp: Path, responder: Any, step: dict[str, Any], rows: list[dict[str, Any]],
             **kw: Any) -> tuple[FakeOpenAIServer, Path]:
    tmp.mkdir(parents=True, exist_ok=True)
    with FakeOpenAIServer(responder) as server:
        run(pipeline(tmp, server.url, [step]), tmp / "out", write_jsonl(tmp / "in.jsonl", rows),
            **kw)
    return server, tmp / "out"


# -- 1. a failed verdict leaves no call of its record running ---------------------------------
SLOW = 0.6


def unreadable_then_slow(slow_sent: list[float]) -> Any:
    """GOOD shown first: an unreadable reply at once; POOR first: a readable one, `SLOW`
    seconds late (the time it arrived is appended to `slow_sent`)."""
    def respond(body: dict[str, Any]) -> Reply:
        text = prompt_of(body)
        if text.index("ZGOOD") < text.index("ZPOOR"):
            return Reply(text="I cannot decide.")
        slow_sent.append(time.monotonic())
        return Reply(text="ZGOOD is better.\nVerdict: B\nPreferred: 2\nRanking: [2] > [1]",
                     delay=SLOW)
    return respond


@pytest.mark.parametrize("step", [
    {"use": "judge-pair", "name": "pair"},
    {"use": "judge-rank", "name": "rank", "with": {"repeats": 2}},
    {"use": "rlaif-label", "name": "label"}])
def test_a_failure_row_is_written_after_every_call_of_its_record_ended(
        tmp_path: Path, step: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    failed_at: list[float] = []
    slow_sent: list[float] = []
    original = StepContext.fail

    def fail(self: StepContext, item: Any, reason: str, raw: list[str] | None = None) -> None:
        failed_at.append(time.monotonic())
        original(self, item, reason, raw)

    monkeypatch.setattr(StepContext, "fail", fail)
    rows = [{"instruction": "Say which.", "completions": [GOOD, POOR]}]
    server, out = one_step(tmp_path, unreadable_then_slow(slow_sent), step, rows)
    assert len(server.calls) == 2 and len(slow_sent) == 1  # both orders (repeats) asked
    assert len(read_jsonl(out / "failures.jsonl")) == len(failed_at) == 1
    assert failed_at[0] - slow_sent[0] >= SLOW * 0.9  # written once the slow reply came


# -- 2. judge-rank: distinct shown orders, seeded tie-breaks, the last 'Ranking:' line ---------
def first_shown_ranker(body: dict[str, Any]) -> Reply:
    """Always ranks the response shown first on top."""
    count = len(re.findall(r"^\[\d+\]$", prompt_of(body), re.M))
    return Reply(text="Ranking: " + " > ".join(f"[{i}]" for i in range(1, count + 1)))


def test_repeats_show_new_orders_so_a_first_shown_ranker_is_inconsistent(
        tmp_path: Path) -> None:
    rows = [{"instruction": f"Q{i}", "completions": [f"{GOOD} {i}", f"{POOR} {i}"]}
            for i in range(8)]
    step = {"use": "judge-rank", "name": "rank", "with": {"repeats": 2}}
    server, out = one_step(tmp_path, first_shown_ranker, step, rows)
    assert len(server.calls) == 16
    assert read_jsonl(out / "records.jsonl") == []  # K=2: the two repeats show both orders
    dropped = read_jsonl(out / "dropped.jsonl")
    assert len(dropped) == 8 and {d["reason"] for d in dropped} == {"inconsistent ranking"}
    for d in dropped:
        shown = [j["shown"] for j in d["record"]["judgements"]]
        assert sorted(shown) == [[0, 1], [1, 0]]


def test_shown_orders_differ_while_unseen_orders_remain() -> None:
    for seed in range(20):
        orders = shown_orders(3, [random.Random(seed) for _ in range(6)])  # same draw x6
        assert sorted(map(tuple, orders)) == sorted(itertools.permutations(range(3)))
    assert len(shown_orders(2, [random.Random(1) for _ in range(3)])) == 3  # 3 > 2! orders


def test_equal_mean_positions_are_broken_by_a_seeded_draw_not_pool_order(
        tmp_path: Path) -> None:
    """A judge that ranks first-shown on top twice, under both orders: every completion has
    mean position 0.5, so the final order is the tie-break alone."""
    rows = [{"instruction": f"Q{i}", "completions": [f"A{i}", f"B{i}"]} for i in range(16)]
    step = {"use": "judge-rank", "name": "rank", "with": {"repeats": 2, "min_agreement": -1}}
    _, out = one_step(tmp_path, first_shown_ranker, step, rows)
    records = read_jsonl(out / "records.jsonl")
    assert len(records) == 16
    firsts = [r["ranking"][0] for r in records]
    assert 0 < sum(firsts) < 16  # not always completion 0 (pool order)
    _, again = one_step(tmp_path / "again", first_shown_ranker, step, rows)
    rankings = {r["instruction"]: r["ranking"] for r in records}  # completion order varies
    assert {r["instruction"]: r["ranking"] for r in read_jsonl(again / "records.jsonl")} == \
        rankings  # seeded: the same draw on a rerun


def test_the_ranking_is_read_from_the_last_ranking_line() -> None:
    text = "Before ranking, note [3] is long.\nRanking: [2] > [1] > [3]"
    assert parse_ranking(text, 3) == [2, 1, 3]
    assert parse_ranking("**Ranking:**\n[3] > [1] > [2]", 3) == [3, 1, 2]
    assert parse_ranking("Ranking: [1] > [2] > [3]\nOn reflection,\nRanking: [3] > [2] > [1]",
                         3) == [3, 2, 1]


# -- 3. judge-pair: a decided direct win, no ties when they are not allowed --------------------
def cyclic_judge(body: dict[str, Any]) -> Reply:
    """Verdicts from `PAIR_RESULTS`, the same in both orders (no position bias)."""
    text = prompt_of(body)
    a = text.split("Response A:\n", 1)[1].split("\n\n", 1)[0]
    b = text.split("Response B:\n", 1)[1].split("\n\n", 1)[0]
    result = PAIR_RESULTS.get((a, b)) or {"A": "B", "B": "A", "tie": "tie"}[
        PAIR_RESULTS[b, a]]
    return Reply(text=f"Compared.\nVerdict: {result}")


# W beats L directly only by a tie; W gets its wins from M and N, L loses to M and N.
PAIR_RESULTS = {("W", "L"): "tie", ("W", "M"): "A", ("W", "N"): "A", ("M", "L"): "A",
                ("N", "L"): "A", ("M", "N"): "tie"}


def test_chosen_needs_a_decided_direct_win_over_rejected(tmp_path: Path) -> None:
    rows = [{"instruction": "Q", "completions": ["W", "L", "M", "N"]}]
    _, out = one_step(tmp_path, cyclic_judge, {"use": "judge-pair", "name": "pair"}, rows)
    assert read_jsonl(out / "records.jsonl") == []  # W most wins, L fewest, but W-L a tie
    dropped = read_jsonl(out / "dropped.jsonl")
    assert [d["reason"] for d in dropped] == ["no clear preference"]
    assert dropped[0]["record"]["preference"]["wins"] == {"0": 2.5, "1": 0.5, "2": 1.5,
                                                          "3": 1.5}


def test_a_tie_reply_is_a_failure_when_ties_are_not_allowed(tmp_path: Path) -> None:
    def tie(body: dict[str, Any]) -> Reply:
        return Reply(text="They are equally good.\nVerdict: tie")

    rows = [{"instruction": "Q", "completions": [GOOD, POOR]}]
    _, allowed = one_step(tmp_path / "a", tie, {"use": "judge-pair", "name": "pair"}, rows)
    assert read_jsonl(allowed / "failures.jsonl") == []
    assert [d["reason"] for d in read_jsonl(allowed / "dropped.jsonl")] == ["no clear preference"]
    step = {"use": "judge-pair", "name": "pair", "with": {"allow_ties": False}}
    _, out = one_step(tmp_path / "b", tie, step, rows)
    failures = read_jsonl(out / "failures.jsonl")
    assert len(failures) == 1 and "allow_ties" in failures[0]["reason"]
    assert read_jsonl(out / "dropped.jsonl") == []


# -- 4. preference-pairs: identical texts make no pair ---------------------------------------
def test_pairs_with_identical_texts_are_dropped(tmp_path: Path) -> None:
    rows = [{"instruction": "Q", "completions": [{"text": "Same  answer.", "rating": 5},
                                                 {"text": "Same answer.\n", "rating": 2}]},
            {"instruction": "R", "completions": [{"text": "Better.", "rating": 5},
                                                 {"text": "Worse.", "rating": 2}]}]
    _, out = one_step(tmp_path, None, {"use": "preference-pairs", "name": "pairs"}, rows)
    kept = read_jsonl(out / "records.jsonl")
    assert [(r["chosen"], r["rejected"]) for r in kept] == [("Better.", "Worse.")]
    assert [d["reason"] for d in read_jsonl(out / "dropped.jsonl")] == ["identical texts"]


# -- 5. the prompt the models answered is what the judges see and the export holds ------------
def policy_and_judges(body: dict[str, Any]) -> Reply:
    if body["model"] == "policy":
        return Reply(text=f"{GOOD}" if "Be thorough" in prompt_of(body) else POOR)
    text = prompt_of(body)
    if "<text 1>" in text:
        texts = re.findall(r"<text (\d+)>\n(.*?)\n</text", text, re.S)
        return Reply(text="\n".join(f"Text {i}\nRationale: judged on the rubric.\n"
                                    f"Rating: {5 if 'ZGOOD' in t else 2}" for i, t in texts))
    if "Response A:" in text:
        first = text.split("Response A:\n", 1)[1].split("Response B:", 1)[0]
        return Reply(text=f"Compared.\nVerdict: {'A' if 'ZGOOD' in first else 'B'}")
    shown = re.findall(r"^\[(\d)\]\n(.*)$", text, re.M)
    ranked = sorted(shown, key=lambda s: "ZGOOD" not in s[1])
    return Reply(text="Ranking: " + " > ".join(f"[{i}]" for i, _ in ranked))


def test_the_asked_prompt_is_kept_shown_to_the_judges_and_exported(tmp_path: Path) -> None:
    rows = [{"instruction": "Summarize the text.", "input": "The cat sat."}]
    steps = [{"use": "completions", "name": "answers", "with": {
                 "backend": "policy", "samples": 2,
                 "template": "Task: {instruction}\nText: {input}",
                 "system_messages": ["Be thorough.", "Be terse."]}},
             {"use": "judge-rate", "name": "rate", "with": {"mode": "together"}},
             {"use": "judge-pair", "name": "pair"},
             {"use": "judge-rank", "name": "rank", "with": {"repeats": 1,
                                                           "min_agreement": -1}},
             {"use": "preference-pairs", "name": "pairs"}]
    tmp_path.mkdir(parents=True, exist_ok=True)
    with FakeOpenAIServer(policy_and_judges) as server:
        run(pipeline(tmp_path, server.url, steps), tmp_path / "out",
            write_jsonl(tmp_path / "in.jsonl", rows), formats=("dpo",))
    asked = "Task: Summarize the text.\nText: The cat sat."
    judged = [b for b in server.calls if b["model"] == "judge"]
    assert judged and all(f"Instruction:\n{asked}\n\n" in prompt_of(b) for b in judged)
    record = read_jsonl(tmp_path / "out" / "records.jsonl")[0]
    assert record["prompt"] == [{"role": "user", "content": asked}]  # no system message
    assert {c["system_message"] for c in record["completions"]} <= {"Be thorough.",
                                                                    "Be terse."}
    row = to_dpo(record)
    assert row is not None and row["prompt"] == [{"role": "user", "content": asked}]


def test_without_a_prompt_the_judge_sees_the_instruction_and_its_input(tmp_path: Path) -> None:
    rows = [{"instruction": "Summarize the text.", "input": "The cat sat.",
             "completions": [GOOD, POOR]},
            {"instruction": "Say hi.", "input": "", "completions": [GOOD, POOR]}]
    server, _ = one_step(tmp_path, policy_and_judges, {"use": "judge-pair", "name": "pair"},
                         rows)
    shown = {prompt_of(b).split("Instruction:\n", 1)[1].split("\n\nResponse A", 1)[0]
             for b in server.calls}
    assert shown == {"Summarize the text.\n\nThe cat sat.", "Say hi."}


# -- 6. judge-rate together: shuffled shown order, ratings mapped back -----------------------
def test_together_rating_shuffles_the_shown_order_and_maps_ratings_back(
        tmp_path: Path) -> None:
    texts = [f"plain answer {k}" for k in range(3)]
    rows = [{"instruction": f"Q{i}", "completions": [*texts[:1], f"{GOOD} {i}", *texts[1:]]}
            for i in range(8)]
    step = {"use": "judge-rate", "name": "rate", "with": {
        "mode": "together", "aspects": {"helpfulness": "1..5", "honesty": "1..5"}}}
    server, out = one_step(tmp_path, policy_and_judges, step, rows)
    positions = set()
    for body in server.calls:
        shown = re.findall(r"<text (\d+)>\n(.*?)\n</text", prompt_of(body), re.S)
        positions.add(next(int(p) - 1 for p, t in shown if "ZGOOD" in t))
    assert len(positions) > 1  # the good text was not always shown at the same place
    for record in read_jsonl(out / "records.jsonl"):
        ratings = [c["rating"] for c in record["completions"]]
        assert ratings == [2.0, 5.0, 2.0, 2.0]  # the 5 went to the GOOD text, wherever shown
        entries = record["judgements"]
        assert len(entries) == 8 and all("position" in e for e in entries)
        for aspect in ("helpfulness", "honesty"):
            got = sorted(e["position"] for e in entries if e["aspect"] == aspect)
            assert got == [0, 1, 2, 3]  # one shown position per text
    # the position recorded is where the text was shown
    for body in server.calls:
        text = prompt_of(body)
        question = re.search(r"Instruction:\nQ(\d+)", text)
        aspect = re.search(r"Rubric \((\w+)\)", text)
        assert question and aspect
        record = next(r for r in read_jsonl(out / "records.jsonl")
                      if r["instruction"] == f"Q{question.group(1)}")
        shown = re.findall(r"<text (\d+)>\n(.*?)\n</text", text, re.S)
        for p, t in shown:
            index = next(k for k, c in enumerate(record["completions"]) if c["text"] == t)
            entry = next(e for e in record["judgements"]
                         if e["completion"] == index and e["aspect"] == aspect.group(1))
            assert entry["position"] == int(p) - 1
