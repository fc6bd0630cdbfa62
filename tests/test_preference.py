"""Model pools, AI judges (rating, pairwise with position swap, k-wise ranking), preference
pairs, judge-bias measures and TRL preference exports, against a real HTTP test server."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from synthaug.measure.judge_bias import binomial_p, judge_biases
from synthaug.pipeline import Pipeline, resolve_recipe
from synthaug.report.html import write_report
from synthaug.testing import FakeOpenAIServer, Reply
from tests.conftest import read_jsonl, run, write_jsonl
from tests.recipe_helpers import prompt_of

MODELS = ["alpha", "beta", "gamma"]
QUESTIONS = [{"instruction": f"Explain topic {i}."} for i in range(12)]


def pipeline(tmp: Path, url: str, steps: list[dict[str, Any]], *, choose: str = "each",
             judge: str = "judge") -> Pipeline:
    """A recipe whose `policy` role is a pool of three models and whose `judge` role is one."""
    members = [{"use": "openai", "with": {"base_url": url, "model": m, "concurrency": 2}}
               for m in MODELS]
    recipe = {"name": "pref-test", "input": "required", "steps": steps, "backends": {
        "policy": {"use": "pool", "with": {"choose": choose, "members": members}},
        "judge": {"use": "openai", "with": {"base_url": url, "model": judge}}}}
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return Pipeline.from_recipe(*resolve_recipe(str(path)))


def answer_by_model(body: dict[str, Any]) -> Reply:
    """Policy models answer in their own style: gamma writes the best (and longest) answer."""
    words = {"alpha": "short", "beta": "a middling answer", "gamma": "GOOD thorough answer"}
    return Reply(text=f"{words.get(body['model'], 'judge?')} by {body['model']}")


def fair_pair_judge(body: dict[str, Any]) -> Reply:
    """Prefers the better response (gamma's, then beta's), wherever it is shown."""
    if body["model"] != "judge":
        return answer_by_model(body)
    text = prompt_of(body)
    a, b = text.split("Response A:\n", 1)[1].split("\n\nResponse B:\n", 1)
    quality = {"alpha": 0, "beta": 1, "gamma": 2}
    better = quality[re.findall(r"by (\w+)", a)[-1]] > quality[re.findall(r"by (\w+)", b)[0]]
    return Reply(text=f"A is {'better' if better else 'worse'}.\n"
                      f"Verdict: {'A' if better else 'B'}")


def first_position_judge(body: dict[str, Any]) -> Reply:
    """Always prefers the response shown first."""
    if body["model"] != "judge":
        return answer_by_model(body)
    return Reply(text="The first one reads better.\nVerdict: A")


COMPLETE = {"use": "completions", "name": "answers", "with": {"backend": "policy"}}


def test_pool_each_answers_from_every_model_and_keeps_identity(tmp_path: Path) -> None:
    with FakeOpenAIServer(answer_by_model) as server:
        data = write_jsonl(tmp_path / "in.jsonl", QUESTIONS[:4])
        run(pipeline(tmp_path, server.url, [COMPLETE]), tmp_path / "out", data)
        first_calls = len(server.calls)
        records = read_jsonl(tmp_path / "out" / "records.jsonl")
        assert first_calls == 12
        for record in records:
            models = [c["model"] for c in record["completions"]]
            assert sorted(models) == MODELS
            for item in record["completions"]:  # the text really came from that model
                assert item["text"].endswith(f"by {item['model']}")
        manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
        members = manifest["backends"]["policy"]["members"]
        assert {m: members[m]["calls"] for m in MODELS} == dict.fromkeys(MODELS, 4)
        pool = manifest["backends"]["policy"]
        assert pool["calls"] == 12  # numbers summed, the limit reason not garbled by summing
        assert set(pool["limit_reason"].split(", ")) == {members[m]["limit_reason"]
                                                          for m in MODELS}
        run(pipeline(tmp_path, server.url, [COMPLETE]), tmp_path / "out", data, overwrite=True)
        assert len(server.calls) == first_calls  # every answer came from the per-member cache
        assert read_jsonl(tmp_path / "out" / "records.jsonl") == records


def test_pool_round_robin_spreads_calls_and_repeats_its_choice(tmp_path: Path) -> None:
    step = {"use": "text-generation", "with": {"backend": "policy"}}
    with FakeOpenAIServer(answer_by_model) as server:
        data = write_jsonl(tmp_path / "in.jsonl",
                           [{"instruction": f"Say {i}."} for i in range(36)])
        run(pipeline(tmp_path, server.url, [step], choose="round-robin"), tmp_path / "a", data)
        calls = len(server.calls)
        run(pipeline(tmp_path, server.url, [step], choose="round-robin"), tmp_path / "a", data,
            overwrite=True)
        assert len(server.calls) == calls  # same member per call: the cache answers all
    first = {r["_meta"]["id"]: r["_meta"]["model"]
             for r in read_jsonl(tmp_path / "a" / "records.jsonl")}
    with FakeOpenAIServer(answer_by_model) as server:
        run(pipeline(tmp_path, server.url, [step], choose="round-robin"), tmp_path / "b", data)
    second = {r["_meta"]["id"]: r["_meta"]["model"]
              for r in read_jsonl(tmp_path / "b" / "records.jsonl")}
    assert first == second  # the member is a function of the call, so reruns hit the cache
    counts = Counter(first.values())
    assert set(counts) == set(MODELS) and min(counts.values()) >= 6  # 36 calls over 3 models


def test_pool_member_options_are_checked_with_their_path(tmp_path: Path) -> None:
    recipe = {"name": "bad", "steps": [COMPLETE], "backends": {"policy": {"use": "pool", "with": {
        "members": [{"use": "openai", "with": {"modle": "x"}}]}}}}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with FakeOpenAIServer() as server:
        from synthaug.errors import ConfigError
        with pytest.raises(ConfigError, match="modle"):
            run(Pipeline.from_recipe(*resolve_recipe(str(path))), tmp_path / "o",
                write_jsonl(tmp_path / "in.jsonl", QUESTIONS[:1]))
        assert server.calls == []


def _pair_run(tmp: Path, judge: Any, swap: bool = True, rows: int = 12) -> list[dict[str, Any]]:
    steps = [{"use": "completions", "name": "answers",
              "with": {"backend": "policy"}},
             {"use": "judge-pair", "name": "prefer", "with": {"swap": swap}}]
    tmp.mkdir(parents=True, exist_ok=True)
    with FakeOpenAIServer(judge) as server:
        data = write_jsonl(tmp / "in.jsonl", QUESTIONS[:rows])
        pipe = pipeline(tmp, server.url, steps)
        run(pipe, tmp / "out", data)
    return read_jsonl(tmp / "out" / "records.jsonl")


def test_pairwise_with_swap_picks_the_content_not_the_position(tmp_path: Path) -> None:
    records = _pair_run(tmp_path, fair_pair_judge)
    assert len(records) == 12
    for record in records:
        assert "GOOD" in record["chosen"] and record["chosen_model"] == "gamma"
        assert "GOOD" not in record["rejected"]
        votes = [j for j in record["judgements"] if j["kind"] == "pair"]
        assert len(votes) == 6  # 3 pairs, both orders


def test_swap_exposes_a_judge_that_follows_the_position(tmp_path: Path) -> None:
    swapped = _pair_run(tmp_path / "s", first_position_judge)
    assert swapped == []  # every pair's two votes disagree: no preference survives
    dropped = read_jsonl(tmp_path / "s" / "out" / "dropped.jsonl")
    assert {d["reason"] for d in dropped} == {"no clear preference"}
    unswapped = _pair_run(tmp_path / "u", first_position_judge, swap=False)
    assert len(unswapped) == 12  # without the swap the biased verdicts pass as preferences


def test_position_bias_is_flagged_for_a_biased_judge_not_a_fair_one(tmp_path: Path) -> None:
    _pair_run(tmp_path / "biased", first_position_judge)
    _pair_run(tmp_path / "fair", fair_pair_judge)
    folder = tmp_path / "biased" / "out"
    rows = read_jsonl(folder / "records.jsonl") + read_jsonl(folder / "dropped.jsonl")
    biased = judge_biases(rows)["pairwise"]
    assert biased["position"]["share"] == 1.0 and biased["position"]["flagged"]
    assert biased["position"]["votes"] == 36  # 12 records x 3 pairs, each won by position
    assert biased["swap_disagreement"]["share"] == 1.0
    fair = judge_biases(read_jsonl(tmp_path / "fair" / "out" / "records.jsonl"))["pairwise"]
    assert fair["position"]["votes"] == 0 and not fair["position"]["flagged"]
    assert fair["swap_disagreement"] == {"swapped_pairs": 36, "share": 0.0}
    page = write_report(folder, embedder=None).read_text()
    assert "position: first position" in page and "FLAGGED" in page
    fair_page = write_report(tmp_path / "fair" / "out", embedder=None).read_text()
    assert "Judges: position" in fair_page
    assert re.search(r"position: first position[^<]*</td><td>n/a(</td><td>[^<]*){3}</td><td>ok",
                     fair_page)
    # its better answers are also the longer ones: the length measure says so, as it should
    assert fair["length"]["share"] == 1.0 and fair["length"]["flagged"]


def test_position_bias_hidden_among_consistent_pairs_is_still_flagged() -> None:
    def pair(one: int, two: int) -> list[dict[str, Any]]:
        return [{"kind": "pair", "judge": "j", "shown": [0, 1], "winner": one,
                 "lengths": [5, 5], "models": ["a", "b"]},
                {"kind": "pair", "judge": "j", "shown": [1, 0], "winner": two,
                 "lengths": [5, 5], "models": ["b", "a"]}]
    # 90 pairs judged on content (a wins in both orders), 12 where the first shown won twice
    rows = [{"judgements": pair(0, 1)} for _ in range(90)] + \
        [{"judgements": pair(0, 0)} for _ in range(12)]
    found = judge_biases(rows)["pairwise"]
    assert found["position"]["votes"] == 12 and found["position"]["flagged"]
    assert found["swap_disagreement"]["share"] == pytest.approx(12 / 102, abs=1e-4)


def test_judgements_copied_into_several_pairs_count_once() -> None:
    entries = [{"kind": "pair", "judge": "j", "shown": [0, 1], "winner": 0,
                "lengths": [5, 9], "models": ["a", "b"]}]
    rows = [{"judgements": entries, "_meta": {"parents": ["p1"]}} for _ in range(3)]
    assert judge_biases(rows)["pairwise"]["length"]["votes"] == 1


def test_length_and_self_preference_are_measured(tmp_path: Path) -> None:
    # a judge named like a policy model that prefers its own (shorter) answers
    def vain(body: dict[str, Any]) -> Reply:
        if body["model"] != "judge":
            return answer_by_model(body)
        text = prompt_of(body)
        a = text.split("Response A:\n", 1)[1].split("\n\nResponse B:", 1)[0]
        return Reply(text=f"Verdict: {'A' if a.endswith('by alpha') else 'B'}")

    rows = _pair_run(tmp_path, vain)
    for row in rows:  # the judge model is called "judge"; mark its own answers as alpha's
        for entry in row["judgements"]:
            entry["judge"] = "alpha"
    found = judge_biases(rows)["pairwise"]
    assert found["self_preference"]["share"] == 1.0 and found["self_preference"]["flagged"]
    assert found["length"]["share"] < 0.5  # it prefers the short answers: measured, too


def test_binomial_test_matches_known_values() -> None:
    assert binomial_p(5, 10) == pytest.approx(1.0)
    assert binomial_p(10, 10) == pytest.approx(2 / 1024)
    assert binomial_p(2, 10) == pytest.approx(112 / 1024)


def rating_judge(body: dict[str, Any]) -> Reply:
    if body["model"] != "judge":
        return answer_by_model(body)
    text = prompt_of(body)
    if "<text 1>" in text:  # together mode: rate every text shown
        texts = re.findall(r"<text (\d+)>\n(.*?)\n</text", text, re.S)
        return Reply(text="\n".join(
            f"Text {i}\nRationale: judged on the rubric.\nRating: {5 if 'GOOD' in t else 2}"
            for i, t in texts))
    response = text.split("Response:\n", 1)[1]
    good = "GOOD" in response.split("\n\nRubric", 1)[0].split("\n\nFirst write", 1)[0]
    return Reply(text=f"Feedback: the response {'meets' if good else 'misses'} the rubric."
                      f"\nScore: {4.5 if good else 2}")


@pytest.mark.parametrize("mode", ["each", "together"])
def test_ratings_with_rationales_then_binarized_pairs(tmp_path: Path, mode: str) -> None:
    steps = [COMPLETE,
             {"use": "judge-rate", "name": "rate", "with": {
                 "mode": mode, "aspects": {"helpfulness": "1 useless .. 5 very useful",
                                           "honesty": "1 misleading .. 5 honest"}}},
             {"use": "preference-pairs", "name": "pairs"}]
    with FakeOpenAIServer(rating_judge) as server:
        run(pipeline(tmp_path, server.url, steps), tmp_path / "out",
            write_jsonl(tmp_path / "in.jsonl", QUESTIONS[:6]))
        judge_calls = sum(1 for b in server.calls if b["model"] == "judge")
    assert judge_calls == (12 if mode == "together" else 36)  # 2 aspects x (1 or 3) per record
    records = read_jsonl(tmp_path / "out" / "records.jsonl")
    assert len(records) == 6
    for record in records:
        assert record["chosen_model"] == "gamma" and record["rejected_model"] in ("alpha", "beta")
        assert record["chosen_score"] > record["rejected_score"]
        best = next(c for c in record["completions"] if c["model"] == "gamma")
        assert best["ratings"]["honesty"]["rationale"]
        assert best["rating"] == (4.5 if mode == "each" else 5.0)


def test_a_rating_without_rationale_or_score_is_a_failure(tmp_path: Path) -> None:
    def terse(body: dict[str, Any]) -> Reply:
        if body["model"] != "judge":
            return answer_by_model(body)
        return Reply(text="Score: 4") if "topic 0" in prompt_of(body) else \
            Reply(text="Quite good overall, I would say.")

    steps = [COMPLETE, {"use": "judge-rate", "name": "rate"}]
    with FakeOpenAIServer(terse) as server:
        run(pipeline(tmp_path, server.url, steps), tmp_path / "out",
            write_jsonl(tmp_path / "in.jsonl", QUESTIONS[:2]))
    failures = read_jsonl(tmp_path / "out" / "failures.jsonl")
    reasons = " ".join(f["reason"] for f in failures)
    assert len(failures) == 2 and "no rationale" in reasons and "no score" in reasons
    assert read_jsonl(tmp_path / "out" / "records.jsonl") == []


def ranking_judge(consistent: bool) -> Any:
    def respond(body: dict[str, Any]) -> Reply:
        if body["model"] != "judge":
            return answer_by_model(body)
        text = prompt_of(body)
        shown = re.findall(r"\[(\d)\]\n(.*?) by (\w+)", text)
        order = {"gamma": 0, "beta": 1, "alpha": 2}
        ranked = sorted(shown, key=lambda s: order[s[2]])
        if not consistent and "beta" in text.split("[1]\n", 1)[1][:40]:
            ranked = ranked[::-1]  # flips its ranking when beta is shown first
        return Reply(text="Ranking: " + " > ".join(f"[{s[0]}]" for s in ranked))
    return respond


def test_kwise_ranking_is_checked_for_consistency(tmp_path: Path) -> None:
    steps = [COMPLETE, {"use": "judge-rank", "name": "rank", "with": {"repeats": 3}},
             {"use": "preference-pairs", "name": "pairs", "with": {"by": "rank",
                                                                   "strategy": "best-vs-worst"}}]
    with FakeOpenAIServer(ranking_judge(True)) as server:
        run(pipeline(tmp_path, server.url, steps), tmp_path / "ok",
            write_jsonl(tmp_path / "in.jsonl", QUESTIONS[:6]))
    records = read_jsonl(tmp_path / "ok" / "records.jsonl")
    assert len(records) == 6
    assert all(r["chosen_model"] == "gamma" and r["rejected_model"] == "alpha" for r in records)
    with FakeOpenAIServer(ranking_judge(False)) as server:
        run(pipeline(tmp_path, server.url, steps), tmp_path / "flip",
            write_jsonl(tmp_path / "in.jsonl", QUESTIONS[:6]))
    dropped = read_jsonl(tmp_path / "flip" / "dropped.jsonl")
    assert dropped and {d["reason"] for d in dropped} == {"inconsistent ranking"}


def test_a_ranking_that_is_no_permutation_is_a_failure(tmp_path: Path) -> None:
    def sloppy(body: dict[str, Any]) -> Reply:
        if body["model"] != "judge":
            return answer_by_model(body)
        return Reply(text="Ranking: [1] > [1] > [2]")

    steps = [COMPLETE, {"use": "judge-rank", "name": "rank", "with": {"repeats": 1}}]
    with FakeOpenAIServer(sloppy) as server:
        run(pipeline(tmp_path, server.url, steps), tmp_path / "out",
            write_jsonl(tmp_path / "in.jsonl", QUESTIONS[:2]))
    failures = read_jsonl(tmp_path / "out" / "failures.jsonl")
    assert len(failures) == 2 and all("permutation" in f["reason"] for f in failures)


def _tiny_tokenizer() -> Any:
    """A word-level tokenizer with a ChatML template, built here (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from tests.recipe_helpers import CHATML

    core = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]")
    tokenizer.chat_template = CHATML
    return tokenizer


def test_dpo_kto_rm_exports_load_the_way_trl_reads_them(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    data_utils = pytest.importorskip("trl.data_utils")
    steps = [COMPLETE, {"use": "judge-pair", "name": "prefer"}]
    with FakeOpenAIServer(fair_pair_judge) as server:
        run(pipeline(tmp_path, server.url, steps), tmp_path / "out",
            write_jsonl(tmp_path / "in.jsonl", QUESTIONS[:5]), formats=("dpo", "kto", "rm"))
    out = tmp_path / "out"
    records = read_jsonl(out / "records.jsonl")
    tokenizer = _tiny_tokenizer()

    dpo = datasets.load_dataset("json", data_files=str(out / "records.dpo.jsonl"))["train"]
    assert dpo.column_names == ["prompt", "chosen", "rejected"] and len(dpo) == 5
    for row, record in zip(dpo, records, strict=True):
        assert data_utils.is_conversational(row)
        text = data_utils.apply_chat_template(row, tokenizer)
        assert record["instruction"] in text["prompt"] and text["prompt"].endswith(
            "<|im_start|>assistant\n")
        assert "GOOD" in text["chosen"] and "GOOD" not in text["rejected"]  # not reversed

    rm = datasets.load_dataset("json", data_files=str(out / "records.rm.jsonl"))["train"]
    assert rm.column_names == ["chosen", "rejected"]
    row = data_utils.maybe_extract_prompt(rm[0])  # TRL's implicit-prompt reading
    assert row["prompt"][0]["content"] == records[0]["instruction"]
    assert row["chosen"][0]["content"] == records[0]["chosen"]

    kto = datasets.load_dataset("json", data_files=str(out / "records.kto.jsonl"))["train"]
    assert kto.column_names == ["prompt", "completion", "label"] and len(kto) == 10
    assert sum(kto["label"]) == 5
    unpaired = data_utils.maybe_unpair_preference_dataset(dpo)  # TRL's own DPO -> KTO rows
    assert sorted(map(json.dumps, unpaired.to_list())) == sorted(map(json.dumps, kto.to_list()))


def test_backends_file_points_each_role_at_its_models(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from synthaug.cli import app

    steps = [COMPLETE, {"use": "judge-pair", "name": "prefer"}]
    recipe = {"name": "cli-pref", "input": "required", "steps": steps,
              "backends": {"policy": {"use": "llamacpp"}, "judge": {"use": "llamacpp"}}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    data = write_jsonl(tmp_path / "in.jsonl", QUESTIONS[:3])
    with FakeOpenAIServer(fair_pair_judge) as server:
        roles = {"policy": {"use": "pool", "with": {"choose": "each", "members": [
            {"use": "openai", "with": {"base_url": server.url, "model": m}} for m in MODELS]}},
            "judge": {"use": "openai", "with": {"base_url": server.url, "model": "judge"}}}
        (tmp_path / "models.yaml").write_text(yaml.safe_dump(roles))
        result = CliRunner().invoke(app, ["run", str(tmp_path / "r.yaml"), "-i", str(data),
                                          "-o", str(tmp_path / "out"), "-q", "--format", "dpo",
                                          "--backends", str(tmp_path / "models.yaml")])
        assert result.exit_code == 0, result.output
        assert {b["model"] for b in server.calls} == {*MODELS, "judge"}
    assert len(read_jsonl(tmp_path / "out" / "records.dpo.jsonl")) == 3
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"critic": roles["judge"]}))
    result = CliRunner().invoke(app, ["run", str(tmp_path / "r.yaml"), "-i", str(data), "-o",
                                      str(tmp_path / "o2"), "--backends",
                                      str(tmp_path / "bad.yaml")])
    assert result.exit_code == 2 and "critic" in result.output and "bad.yaml" in result.output


@pytest.mark.parametrize(("text", "verdict"), [
    ("Verdict: a tie", "tie"), ("Verdict: Response A", "A"), ("**Verdict: B**", "B"),
    ("Both fine.\nVerdict: TIE", "tie"), ("A", "A")])
def test_pair_verdicts_read_capital_letters_only(text: str, verdict: str) -> None:
    from synthaug.steps.prefer.common import pair_verdict

    assert pair_verdict(text) == verdict


@pytest.mark.parametrize("text", ["The verdict: a slight edge to response B", "verdict - a draw",
                                  "Verdict: A\nOn reflection, Verdict: B"])
def test_pair_verdicts_never_read_an_article_as_response_a(text: str) -> None:
    from synthaug.errors import ParseError
    from synthaug.steps.prefer.common import pair_verdict

    with pytest.raises(ParseError):
        pair_verdict(text)


def test_preference_exports_never_put_the_answer_in_the_prompt() -> None:
    from synthaug.shapes import to_dpo, to_kto, to_rm

    record = {"messages": [{"role": "system", "content": "Be brief."},
                           {"role": "user", "content": "Capital of France?"},
                           {"role": "assistant", "content": "Paris."}],
              "chosen": "Paris.", "rejected": "Lyon."}
    row = to_dpo(record)
    assert row is not None and row["prompt"][-1] == {"role": "user",
                                                     "content": "Capital of France?"}
    assert to_rm(record)["chosen"][-1]["content"] == "Paris."  # type: ignore[index]
    assert all(r["prompt"][-1]["role"] == "user" for r in to_kto(record))
    broken = {**record, "messages": [{"content": "no role"}]}
    assert to_dpo(broken) is None and to_kto(broken) == []
