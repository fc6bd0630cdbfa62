"""`synthaug card`: a Hugging Face dataset card from real runs against the test server (and
one on the embedded model): front matter validated by huggingface_hub, citations, counts equal
to the manifest's, drops with reasons, decontamination through the lineage, and the demo-model
warning exactly when the embedded model made records."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import typer
from huggingface_hub import DatasetCard
from typer.testing import CliRunner

from synthaug import cli_card
from synthaug.errors import ConfigError
from synthaug.pipeline import Pipeline, resolve_recipe
from synthaug.publish.card import (
    CardOptions,
    license_fields,
    size_category,
    task_categories,
    validate,
    write_card,
)
from synthaug.publish.facts import DEMO_WARNING, Run
from synthaug.publish.files import data_files
from synthaug.steps.curate.decontaminate import Decontaminate
from synthaug.testing import FakeOpenAIServer, Reply
from tests.conftest import read_jsonl, run, text_generation, write_jsonl
from tests.recipe_helpers import prompt_of, recipe_pipeline

RATINGS = ["4.5\nAccurate.", "5\nCorrect and complete.", "4\nMostly right.",
           "Score: 3/5\nPartly wrong.", "0\nUnrelated.", "I cannot tell."]


def publish_app() -> typer.Typer:
    """The publishing verbs alone (as `synthaug` registers them)."""
    app = typer.Typer()
    for name, command in cli_card.COMMANDS.items():
        app.command(name)(command)  # type: ignore[type-var]
    return app


def alpagasus_run(server: FakeOpenAIServer, tmp: Path) -> Path:
    """AlpaGasus over 6 pairs and one broken line: 2 kept, 3 dropped by score, 1 failure,
    1 reject."""
    def reply(body: dict[str, Any]) -> Reply:
        index = int(re.search(r"Task (\d)\.", prompt_of(body)).group(1))  # type: ignore[union-attr]
        return Reply(text=RATINGS[index])

    server.responder = reply
    rows = [{"instruction": f"Task {i}.", "input": "", "output": f"Answer {i}."}
            for i in range(6)]
    data = write_jsonl(tmp / "in.jsonl", rows)
    with data.open("a", encoding="utf-8") as handle:
        handle.write("{not json\n")
    run(recipe_pipeline("alpagasus", server.url), tmp / "out", data)
    return tmp / "out"


def front(text: str) -> dict[str, Any]:
    data: dict[str, Any] = DatasetCard(text).data.to_dict()  # type: ignore[no-untyped-call]
    return data


def test_card_front_matter_citations_and_counts_match_the_manifest(
        server: FakeOpenAIServer, tmp_path: Path) -> None:
    out = alpagasus_run(server, tmp_path)
    path, card = write_card(out, CardOptions())
    text = path.read_text(encoding="utf-8")
    assert path == out / "README.md" and text.startswith("---\n")
    meta = front(text)
    manifest = json.loads((out / "manifest.json").read_text())
    assert meta["license"] == "unknown" and "License: **unknown**" in text  # never invented
    assert meta["size_categories"] == ["n<1K"]
    assert meta["task_categories"] == ["text-generation"]
    assert meta["pretty_name"] == "alpagasus (synthaug)"
    assert {"synthetic", "alpagasus", "labeling", "instruction-tuning"} <= set(meta["tags"])
    assert meta["configs"] == [{"config_name": "default", "data_files": [
        {"split": "train", "path": "data/records.jsonl"}]}]
    assert "language" not in meta  # not known: no filter kept a language, none was given
    # the citation, linked
    assert ("Chen et al., 2024. AlpaGasus: Training a Better Alpaca with Fewer Data. ICLR "
            "2024. [arXiv:2307.08701](https://arxiv.org/abs/2307.08701)") in text
    # every step's row equals the manifest's counters
    for label, s in manifest["steps"].items():
        use = next(x["use"] for x in manifest["config"]["steps"] if x["name"] == label)
        row = (f"| {label} | {use} | {s['in']} | {s['out']} | {sum(s['dropped'].values())} | "
               f"{s['failures']} | {s['rejects']} | {s['llm_samples']} | {s['cache_hits']} |")
        assert row in text
    assert manifest["steps"]["select"]["dropped"] == {"score < 4.5": 3}
    assert "- `select` dropped 3: score < 4.5" in text
    assert (f"Rejects (input lines not used): {manifest['side_files']['rejects']}" in text
            and manifest["side_files"] == {"rejects": 1, "failures": 1, "dropped": 3})
    assert "Failures (calls that failed after retries; a rerun retries them): 1." in text
    assert card.facts.count == manifest["total_records"] == 2
    assert "| default | openai | m |" in text  # the model, no endpoint
    assert server.url not in text and "127.0.0.1" not in text
    assert "| select | ScoreFilter | 6 | 2 |" not in text  # rate failed one: 5 reached select
    assert "| select | ScoreFilter | 5 | 2 |" in text.split("## Filters")[1]
    assert "not** checked against benchmarks" in text
    assert "demo model" not in text and "Warning" not in text  # the fake model is no demo


def test_license_language_tags_and_formats_from_options(server: FakeOpenAIServer,
                                                        tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", [{"instruction": f"Say {i}."} for i in range(3)])
    run(text_generation(server.url), tmp_path / "out", data, formats=("sft",))
    out = tmp_path / "out"
    options = CardOptions(license="CC-BY-4.0", language=["en"], tags=["demo"],
                          pretty_name="Tiny echo set", repo="me/echo")
    path, _ = write_card(out, options, formats=["parquet", "sft"])
    text = path.read_text(encoding="utf-8")
    meta = front(text)
    assert meta["license"] == "cc-by-4.0" and meta["language"] == ["en"]
    assert meta["pretty_name"] == "Tiny echo set" and "demo" in meta["tags"]
    assert meta["configs"] == [
        {"config_name": "default", "data_files": [{"split": "train",
                                                   "path": "data/records.parquet"}]},
        {"config_name": "sft", "data_files": [{"split": "train",
                                               "path": "data/records.sft.jsonl"}]}]
    assert (out / "records.parquet").is_file()  # exported on request
    _, only_sft = write_card(out, options, formats=["sft"])  # no records config: sft opens
    assert front(only_sft.text)["configs"] == [{"config_name": "sft", "default": True,
                                                "data_files": [{"split": "train", "path":
                                                                "data/records.sft.jsonl"}]}]
    assert 'load_dataset("me/echo", "sft")' in text
    assert license_fields("My Own License 1.0") == {"license": "other",
                                                    "license_name": "my-own-license-1.0"}


def test_size_categories_and_task_categories_from_recipe_tags() -> None:
    assert [size_category(n) for n in (0, 999, 1000, 9999, 10_000, 2_000_000)] == [
        "n<1K", "n<1K", "1K<n<10K", "1K<n<10K", "10K<n<100K", "1M<n<10M"]

    def categories(name: str) -> list[str]:
        recipe, _ = resolve_recipe(name)
        return task_categories([Run(Path("."), {"tags": recipe.tags.model_dump()})])

    assert categories("llm-labeling") == ["text-classification"]  # labels, not generations
    assert categories("eda") == ["text-classification"]
    assert categories("deita") == ["text-classification", "text-generation"]
    assert categories("self-instruct") == ["text-generation"]


def test_card_of_a_decontaminated_folder_tells_the_lineage(server: FakeOpenAIServer,
                                                           tmp_path: Path) -> None:
    leak = "Natalia sold clips to 48 of her friends in April and then half as many in May"
    bench = write_jsonl(tmp_path / "bench.jsonl", [{"id": "q1", "text": leak}])
    data = write_jsonl(tmp_path / "in.jsonl", [{"instruction": leak},
                                               {"instruction": "Name a colour."}])
    run(text_generation(server.url), tmp_path / "gen", data)
    step = Decontaminate(fields=["generation"], benchmarks=[str(bench)], ngram=8,
                         embedder=None)
    run(Pipeline.from_steps(step, name="decontaminate"), tmp_path / "clean",
        tmp_path / "gen" / "records.jsonl")
    path, card = write_card(tmp_path / "clean", CardOptions())
    text = path.read_text(encoding="utf-8")
    manifest = json.loads((tmp_path / "clean" / "manifest.json").read_text())
    [hits] = [s["notes"] for s in manifest["steps"].values()]
    assert hits == {"hits:bench:ngram": 1}
    assert card.facts.count == 1 == len(read_jsonl(tmp_path / "clean" / "records.jsonl"))
    # both runs, generation first, then the curation verb
    assert text.index("Recipe `text-generation`") < text.index("Recipe `decontaminate`")
    section = text.split("## Decontamination")[1]
    assert "checked 2 records against bench.jsonl" in section
    assert "Hits by benchmark and method: bench:ngram: 1; 1 dropped" in section
    assert str(tmp_path) not in text  # local paths cut to file names


def test_card_refuses_what_the_hub_would_refuse(server: FakeOpenAIServer,
                                                tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", [{"instruction": "Hi."}])
    run(text_generation(server.url), tmp_path / "out", data)
    files = data_files(tmp_path / "out")
    _, card = write_card(tmp_path / "out", CardOptions())
    validate(card.text, files)
    for bad, why in [(card.text.replace("license: unknown", "license: free-for-all"),
                      "not a Hub license id"),
                     (card.text.replace("n<1K", "tiny"), "size category"),
                     (card.text.replace("data/records.jsonl", "data/other.jsonl"),
                      "not uploaded")]:
        with pytest.raises(ConfigError, match=why):
            validate(bad, files)
    with pytest.raises(ConfigError, match="no rows"):
        data_files(tmp_path / "out", ["dpo"])  # no record has a chosen/rejected pair


def test_card_command(server: FakeOpenAIServer, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", [{"instruction": "Hi."}])
    run(text_generation(server.url), tmp_path / "out", data)
    runner = CliRunner()
    done = runner.invoke(publish_app(), ["card", str(tmp_path / "out"), "--license", "mit"])
    assert done.exit_code == 0, done.output
    assert front((tmp_path / "out" / "README.md").read_text())["license"] == "mit"
    missing = runner.invoke(publish_app(), ["card", str(tmp_path)])
    assert missing.exit_code == 2 and "error:" in missing.output
    bad = runner.invoke(publish_app(), ["card", str(tmp_path / "out"), "--format", "hf"])
    assert bad.exit_code == 2 and "parquet" in bad.output


@pytest.mark.model
def test_demo_warning_when_the_embedded_model_made_records(tmp_path: Path) -> None:
    recipe, source = resolve_recipe("text-generation")
    recipe.steps[0].with_["sampling"] = {"max_tokens": 4}
    data = write_jsonl(tmp_path / "in.jsonl", [{"instruction": "Say hi."}])
    run(Pipeline.from_recipe(recipe, source), tmp_path / "out", data)
    path, card = write_card(tmp_path / "out", CardOptions())
    text = path.read_text(encoding="utf-8")
    assert card.facts.embedded == card.facts.count == 1
    assert f"> **Warning:** 1 of 1 records were {DEMO_WARNING}." in text
    assert f"Role default: the embedded model; what it wrote was {DEMO_WARNING}." in text


def test_measures_are_the_report_s(server: FakeOpenAIServer, tmp_path: Path) -> None:
    from synthaug.measure.dataset import measure

    data = write_jsonl(tmp_path / "in.jsonl", [{"instruction": f"Describe thing {i} briefly."}
                                               for i in range(5)])
    run(text_generation(server.url), tmp_path / "out", data)
    _, card = write_card(tmp_path / "out", CardOptions(measures=True))
    expected = measure(read_jsonl(tmp_path / "out" / "records.jsonl"), embedder=None)
    section = card.text.split("## Measures")[1].split("## Files")[0]
    assert "over the fields instruction, generation" in section
    for name in ("distinct_1", "distinct_2", "self_bleu", "compression_ratio"):
        assert f"| {name} | {expected[name]:.4f} |" in section
    assert "| vendi |" in section and "| coverage.covered |" in section
    _, plain = write_card(tmp_path / "out", CardOptions())
    assert "## Measures" not in plain.text  # only when asked: it needs the curate extra
