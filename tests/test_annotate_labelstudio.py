"""The Label Studio round trip against a real Label Studio server (SQLite, a temporary data
folder): the co-annotate step's tasks and labeling config go into a project created through
Label Studio's SDK, two people annotate through the REST API as the web page does, the
project is exported with the SDK and `synthaug annotate import` merges the labels back.

Label Studio lives in its own virtual environment (.venv-labelstudio, `make labelstudio`;
another folder with SYNTHAUG_LABEL_STUDIO_VENV): its pinned dependencies (Django, numpy < 2.3
through label-studio-sdk) conflict with synthaug's. The SDK calls run in that environment
(tests/annotate_ls_driver.py); the annotations are posted from here with httpx.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sklearn.metrics import cohen_kappa_score
from typer.testing import CliRunner

from synthaug.cli import app
from synthaug.testing import FakeOpenAIServer
from tests.conftest import read_jsonl
from tests.test_augment_coannotate import Labeler, route

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("SYNTHAUG_LABEL_STUDIO_VENV", ROOT / ".venv-labelstudio"))
DRIVER = Path(__file__).with_name("annotate_ls_driver.py")
TOKEN = "5a1e5c0ffee0ddba11dec0de0123456789abcdef"
START_LIMIT = 240.0  # seconds; a first start runs the database migrations (about 30 s)

pytestmark = pytest.mark.skipif(
    not (VENV / "bin" / "label-studio").exists(),
    reason=f"no Label Studio virtual environment at {VENV} (make labelstudio creates it)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Label Studio server on loopback with one admin whose legacy API token is TOKEN."""
    data = tmp_path_factory.mktemp("label-studio")
    port = _free_port()
    env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(data),
           "LABEL_STUDIO_USERNAME": "annotator@example.com",
           "LABEL_STUDIO_PASSWORD": "not-a-secret-1", "LABEL_STUDIO_USER_TOKEN": TOKEN,
           "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true", "SENTRY_DSN": "",
           "FRONTEND_SENTRY_DSN": "", "COLLECT_ANALYTICS": "false"}
    log = (data / "server.log").open("wb")
    began = time.monotonic()
    server = subprocess.Popen(
        [str(VENV / "bin" / "label-studio"), "start", "--no-browser", "--port", str(port),
         "--data-dir", str(data)], env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, server, data / "server.log")
        print(f"Label Studio healthy after {time.monotonic() - began:.1f}s", file=sys.stderr)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)
        log.close()


def _wait_healthy(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    started = time.monotonic()
    while time.monotonic() - started < START_LIMIT:
        if server.poll() is not None:
            pytest.fail(f"Label Studio exited {server.returncode}:\n"
                        f"{log.read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"Label Studio not healthy after {START_LIMIT:.0f}s:\n"
                f"{log.read_text(errors='replace')[-3000:]}")


def driver(*args: str) -> dict[str, Any]:
    """Run the SDK driver in the Label Studio environment; its JSON answer."""
    done = subprocess.run([str(VENV / "bin" / "python"), str(DRIVER), *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    found: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def annotate(api: httpx.Client, task: int, label: str, user: int | None = None) -> None:
    """Submit one choice for a task, as the labeling page does (as `user` if given)."""
    body: dict[str, Any] = {"result": [{"from_name": "label", "to_name": "text",
                                        "type": "choices", "value": {"choices": [label]}}],
                            "lead_time": 4.2}
    if user is not None:
        body["completed_by"] = user
    response = api.post(f"/api/tasks/{task}/annotations/", json=body)
    assert response.status_code == 201, response.text


def test_label_studio_round_trip(tmp_path: Path, label_studio: str) -> None:
    with FakeOpenAIServer(Labeler()) as model:
        records = route(tmp_path, model.url, threshold=0.5)
    routed = [r for r in records.values() if r["route"] == "human"]
    assert len(routed) == 4
    handoff = tmp_path / "out" / "annotation"
    checked = driver("validate", str(handoff / "config.xml"), str(handoff / "tasks.json"))
    assert checked == {"errors": [], "tasks": 4}, "the SDK accepts the config and the tasks"
    project = driver("create", label_studio, TOKEN, str(handoff / "config.xml"),
                     str(handoff / "tasks.json"))
    assert len(project["task_ids"]) == 4 and project["predictions"] == 4
    wanted = {"Bus was late.": ("negative", "negative"), "It is a chair.": ("neutral", "neutral"),
              "Hmm, well.": ("neutral", "positive")}  # the fourth task stays unannotated
    with httpx.Client(base_url=label_studio, timeout=30,
                      headers={"Authorization": f"Token {TOKEN}"}) as api:
        second = api.post("/api/users/", json={"email": "second@example.com",
                                               "username": "second"})
        assert second.status_code == 201, second.text
        for task in project["task_ids"]:
            text = api.get(f"/api/tasks/{task}").json()["data"]["text"]
            if text in wanted:
                annotate(api, task, wanted[text][0])
                annotate(api, task, wanted[text][1], user=second.json()["id"])
    export = tmp_path / "export.json"
    assert driver("export", label_studio, TOKEN, str(project["project"]), str(export)) == \
        {"tasks": 4}
    result = CliRunner().invoke(app, ["annotate", "import", str(tmp_path / "out"),
                                      "--from", str(export)])
    assert result.exit_code == 0, result.output
    merged = {r["text"]: r for r in read_jsonl(tmp_path / "out" / "annotated" /
                                               "records.jsonl")}
    assert len(merged) == 6
    for text, (first, other) in wanted.items():
        r = merged[text]
        assert r["model_label"] == records[text]["label"]
        assert r["human_labels"] == {"user 1": first, "user 2": other}
        assert r["label"] == first  # agreement, or the earlier annotation on a tie
        by = r["_meta"]["labeled_by"]
        assert by["kind"] == "human" and by["tool"] == "label-studio"
        assert by["annotators"] == ["user 1", "user 2"]
        assert by["model_labeled_by"]["model"] == "labeler-x"
    pending = merged["Meeting at 3."]
    assert pending["_meta"]["labeled_by"]["kind"] == "model" and "model_label" not in pending
    summary = json.loads((tmp_path / "out" / "annotated" / "agreement.json").read_text())
    agreement = summary["agreement"]
    model = [merged[t]["model_label"] for t in wanted]
    assert agreement["model_vs_human"]["kappa"] == pytest.approx(
        cohen_kappa_score(model, [merged[t]["label"] for t in wanted]), abs=1e-4)
    assert agreement["annotator_pairs"]["user 1 | user 2"]["kappa"] == pytest.approx(
        cohen_kappa_score([a for a, _ in wanted.values()], [b for _, b in wanted.values()]),
        abs=1e-4)
    assert agreement["fleiss"]["items"] == 3
    assert summary["pending"] == [records["Meeting at 3."]["_meta"]["id"]]
    print(f"Label Studio round trip on {label_studio} ok", file=sys.stderr)
