"""`synthaug push` against a fake Hub: a real starlette app on loopback, spoken to by the real
huggingface_hub client over a socket. It answers the calls the client makes for
create_repo and create_commit (repo create, README validation, preupload, commit) and records
each with its Authorization header and the files of each commit."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from typer.testing import CliRunner

from synthaug.errors import ConfigError
from synthaug.publish import hub
from synthaug.publish.card import CardOptions, build_card, write_card
from synthaug.publish.files import data_files
from tests.conftest import run, text_generation, write_jsonl
from tests.test_card import publish_app

TOKEN = "hf_testTOKENvalue0123456789"


@dataclass
class Call:
    """One request the fake Hub received."""

    method: str
    path: str
    auth: str | None
    body: Any


@dataclass
class FakeHub:
    """The Hub endpoints huggingface_hub's create_repo/create_commit use, in memory."""

    calls: list[Call] = field(default_factory=list)
    repos: dict[str, dict[str, bytes]] = field(default_factory=dict)  # repo -> path -> bytes
    status: int = 200  # answer every call with this status when not 200
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def files(self, repo: str) -> dict[str, bytes]:
        return self.repos[repo]

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/api/repos/create", self.create, methods=["POST"]),
            Route("/api/validate-yaml", self.validate_yaml, methods=["POST"]),
            Route("/api/{kind}s/{owner}/{name}/preupload/{rev}", self.preupload,
                  methods=["POST"]),
            Route("/api/{kind}s/{owner}/{name}/commit/{rev}", self.commit, methods=["POST"]),
            Route("/{rest:path}", self.unknown, methods=["GET", "POST", "PUT", "DELETE"])])

    async def _record(self, request: Request, body: Any) -> Response | None:
        self.calls.append(Call(request.method, request.url.path,
                               request.headers.get("authorization"), body))
        if self.status != 200:
            return JSONResponse({"error": "refused"}, status_code=self.status)
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return JSONResponse({"error": "Invalid credentials"}, status_code=401)
        return None

    async def create(self, request: Request) -> Response:
        body = await request.json()
        refused = await self._record(request, body)
        if refused:
            return refused
        repo = f"{body.get('organization') or 'me'}/{body['name']}"
        if body.get("type") != "dataset":
            return JSONResponse({"error": "expected a dataset"}, status_code=400)
        if repo in self.repos:  # the Hub names the existing repository's URL
            return JSONResponse({"error": "You already created this dataset repo",
                                 "url": f"{self.url}/datasets/{repo}"}, status_code=409)
        self.repos[repo] = {}
        return JSONResponse({"url": f"{self.url}/datasets/{repo}"})

    async def validate_yaml(self, request: Request) -> Response:
        body = await request.json()
        refused = await self._record(request, body)
        if refused:
            return refused
        front = body["content"].split("---\n")[1]
        errors = [] if isinstance(yaml.safe_load(front), dict) else [{"message": "no YAML"}]
        return JSONResponse({"errors": errors, "warnings": []},
                            status_code=400 if errors else 200)

    async def preupload(self, request: Request) -> Response:
        body = await request.json()
        refused = await self._record(request, body)
        if refused:
            return refused
        return JSONResponse({"files": [{"path": f["path"], "uploadMode": "regular",
                                        "shouldIgnore": False, "oid": None}
                                       for f in body["files"]]})

    async def commit(self, request: Request) -> Response:
        lines = [json.loads(x) for x in (await request.body()).splitlines() if x.strip()]
        refused = await self._record(request, lines)
        if refused:
            return refused
        repo = f"{request.path_params['owner']}/{request.path_params['name']}"
        if repo not in self.repos:
            return JSONResponse({"error": "Repository not found"}, status_code=404)
        for line in lines:
            if line["key"] == "file":
                self.repos[repo][line["value"]["path"]] = base64.b64decode(
                    line["value"]["content"])
        oid = f"{len(self.calls):040x}"
        return JSONResponse({"commitUrl": f"{self.url}/datasets/{repo}/commit/{oid}",
                             "commitOid": oid, "pullRequestUrl": None})

    async def unknown(self, request: Request) -> Response:
        self.calls.append(Call(request.method, request.url.path,
                               request.headers.get("authorization"), None))
        return JSONResponse({"error": "not in the fake Hub"}, status_code=404)


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    import huggingface_hub.constants

    fake = FakeHub()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        fake.port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(fake.app(), host="127.0.0.1", port=fake.port,
                                           log_level="error", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    monkeypatch.setenv("HF_ENDPOINT", fake.url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    # `make` exports HF_HUB_OFFLINE=1 for every other test; this one talks to loopback only
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    yield fake
    server.should_exit = True
    thread.join(5)


def a_run(server: Any, tmp: Path, rows: list[dict[str, Any]] | None = None,
          **backend: Any) -> Path:
    data = write_jsonl(tmp / "in.jsonl", rows or [{"instruction": f"Say {i}."}
                                                  for i in range(3)])
    run(text_generation(server.url, **backend), tmp / "out", data)
    return tmp / "out"


def test_push_uploads_the_card_manifest_and_data_in_one_commit(
        fake_hub: FakeHub, server: Any, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-SECRET-0001")
    out = a_run(server, tmp_path)
    done = hub.push(out, "me/echo", token=TOKEN, formats=["jsonl", "parquet"],
                    options=CardOptions(license="mit"))
    assert [(c.method, c.path) for c in fake_hub.calls] == [
        ("POST", "/api/repos/create"), ("POST", "/api/validate-yaml"),
        ("POST", "/api/datasets/me/echo/preupload/main"),
        ("POST", "/api/datasets/me/echo/commit/main")]
    assert {c.auth for c in fake_hub.calls} == {f"Bearer {TOKEN}"}
    assert fake_hub.calls[0].body == {"name": "echo", "organization": "me", "type": "dataset"}
    files = fake_hub.files("me/echo")
    assert sorted(files) == sorted(done.files) == [
        "README.md", "data/records.jsonl", "data/records.parquet", "manifest.json"]
    card = files["README.md"].decode()
    assert not (out / "README.md").exists()  # uploaded, not written over a card being edited
    assert card == build_card(out, CardOptions(license="mit", repo="me/echo"),
                              data_files(out, ["jsonl", "parquet"])).text
    assert "license: mit" in card and "path: data/records.parquet" in card
    assert 'records = load_dataset("me/echo")' in card
    assert files["data/records.jsonl"] == (out / "records.jsonl").read_bytes()
    assert files["data/records.parquet"] == (out / "records.parquet").read_bytes()
    manifest = json.loads(files["manifest.json"])
    assert manifest["recipe"] == "text-generation" and manifest["input"] == "in.jsonl"
    for blob in files.values():
        assert TOKEN.encode() not in blob and b"sk-openai-SECRET-0001" not in blob
        assert str(tmp_path).encode() not in blob  # no local paths
    assert done.commit_url.startswith(f"{fake_hub.url}/datasets/me/echo/commit/")


def test_a_second_push_reuses_the_repository(fake_hub: FakeHub, server: Any,
                                             tmp_path: Path) -> None:
    out = a_run(server, tmp_path)
    hub.push(out, "me/echo", token=TOKEN)
    hub.push(out, "me/echo", token=TOKEN, private=True)
    creates = [c for c in fake_hub.calls if c.path == "/api/repos/create"]
    assert creates[1].body["visibility"] == "private"  # asked; the Hub keeps the first
    assert sum(c.path.endswith("/commit/main") for c in fake_hub.calls) == 2


def test_push_refuses_a_secret_anywhere_in_the_upload(fake_hub: FakeHub, server: Any,
                                                      tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-live-0123456789abcdef"
    monkeypatch.setenv("MY_SERVICE_API_KEY", secret)
    out = a_run(server, tmp_path, [{"instruction": f"my key is {secret}"}])  # echoed back
    with pytest.raises(ConfigError, match="MY_SERVICE_API_KEY") as caught:
        hub.push(out, "me/echo", token=TOKEN)
    assert caught.value.file == "data/records.jsonl"
    assert fake_hub.calls == []  # nothing was sent


def test_manifest_secrets_are_scrubbed_before_upload(fake_hub: FakeHub, server: Any,
                                                     tmp_path: Path) -> None:
    out = a_run(server, tmp_path)
    path = out / "manifest.json"
    found = json.loads(path.read_text())
    found["config"]["backends"]["judge"] = {"use": "pool", "with": {"members": [
        {"use": "openai", "with": {"api_key": "sk-nested-leak-999",
                                   "base_url": "https://user:pw@example.org/v1?key=abc"}}]}}
    path.write_text(json.dumps(found))
    upload = hub.prepare(out, "me/echo", CardOptions(), None, None, TOKEN)
    blob = upload.blobs["manifest.json"]
    assert isinstance(blob, bytes)
    assert b"sk-nested-leak-999" not in blob and b"user:pw" not in blob and b"abc" not in blob
    assert b"https://example.org/v1" in blob
    assert b"sk-nested-leak-999" not in upload.blobs["README.md"]  # type: ignore[operator]


def test_push_command_errors(fake_hub: FakeHub, server: Any, tmp_path: Path) -> None:
    out = a_run(server, tmp_path)
    runner = CliRunner()
    app = publish_app()
    done = runner.invoke(app, ["push", str(out), "--repo", "me/echo"])
    assert done.exit_code == 2 and "no Hugging Face token" in done.output
    assert fake_hub.calls == []
    bad = runner.invoke(app, ["push", str(out), "--repo", "a/b/c", "--token", TOKEN])
    assert bad.exit_code == 2 and "not a repository id" in bad.output
    wrong = runner.invoke(app, ["push", str(out), "--repo", "me/echo"],
                          env={"HF_TOKEN": "hf_wrong_token_000"})
    assert wrong.exit_code == 1 and "the Hub answered 401 (is the token valid?)" in wrong.output
    assert "hf_wrong_token_000" not in wrong.output
    fake_hub.status = 403
    refused = runner.invoke(app, ["push", str(out), "--repo", "me/echo", "--token", TOKEN])
    assert refused.exit_code == 1 and "403" in refused.output
    fake_hub.status = 200
    ok = runner.invoke(app, ["push", str(out), "--repo", "me/echo"], env={"HF_TOKEN": TOKEN})
    assert ok.exit_code == 0, ok.output
    assert "pushed README.md, manifest.json, data/records.jsonl" in ok.output


def test_an_edited_card_is_uploaded_as_is_once_checked(fake_hub: FakeHub, server: Any,
                                                       tmp_path: Path) -> None:
    out = a_run(server, tmp_path)
    mine = tmp_path / "card.md"
    path, _ = write_card(out, CardOptions())
    mine.write_text(path.read_text() + "\nA note of my own.\n")
    hub.push(out, "me/echo", token=TOKEN, card=mine)
    assert fake_hub.files("me/echo")["README.md"].decode().endswith("A note of my own.\n")
    mine.write_text(mine.read_text().replace("data/records.jsonl", "data/gone.jsonl"))
    calls = len(fake_hub.calls)
    with pytest.raises(ConfigError, match="not uploaded"):
        hub.push(out, "me/echo", token=TOKEN, card=mine)
    assert len(fake_hub.calls) == calls


def test_nothing_to_push(fake_hub: FakeHub, server: Any, tmp_path: Path) -> None:
    out = a_run(server, tmp_path, [{"instruction": 5}])  # not text: rejected
    assert (out / "records.jsonl").read_bytes() == b""
    with pytest.raises(ConfigError, match="no records to push"):
        hub.push(out, "me/echo", token=TOKEN)
    assert fake_hub.calls == []


def test_offline_mode_is_named(fake_hub: FakeHub, server: Any, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    out = a_run(server, tmp_path)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(hub.PushError, match="HF_HUB_OFFLINE is set: unset it to push"):
        hub.push(out, "me/echo", token=TOKEN)
    assert fake_hub.calls == []
