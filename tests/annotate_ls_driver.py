"""Drives Label Studio's own SDK (label-studio-sdk 2.x) for tests/test_annotate_labelstudio.py.

Runs with the Python of the Label Studio virtual environment (.venv-labelstudio), because the
SDK pins versions (numpy < 2.3 among them) that conflict with synthaug's environment. Each
command prints one JSON object.

    python annotate_ls_driver.py validate CONFIG TASKS
    python annotate_ls_driver.py create URL TOKEN CONFIG TASKS
    python annotate_ls_driver.py export URL TOKEN PROJECT OUT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def validate(config: str, tasks: list[dict[str, Any]]) -> dict[str, Any]:
    """The SDK's checks: the config parses; each task's data and predictions fit it."""
    from label_studio_sdk.label_interface import LabelInterface

    interface = LabelInterface(config)
    errors: list[str] = []
    for index, task in enumerate(tasks):
        if not interface.validate_task({"data": task["data"]}):
            errors.append(f"task {index}: data does not fit the config")
        for prediction in task.get("predictions", []):
            errors += [f"task {index}: {e}" for e in
                       interface.validate_prediction(prediction, return_errors=True) or []]
    return {"errors": errors, "tasks": len(tasks)}


def create(url: str, token: str, config: str, tasks: list[dict[str, Any]]) -> dict[str, Any]:
    """A project with the config, the tasks imported; its id and the task ids."""
    from label_studio_sdk import LabelStudio

    client = LabelStudio(base_url=url, api_key=token)
    project = client.projects.create(title="synthaug co-annotation", label_config=config)
    found = client.projects.import_tasks(project.id, request=tasks, return_task_ids=True)
    return {"project": project.id, "task_ids": list(found.task_ids or []),
            "predictions": found.prediction_count}


def export(url: str, token: str, project: int, out: Path) -> dict[str, Any]:
    """The project's JSON export (every task, annotated or not) written to `out`."""
    from label_studio_sdk import LabelStudio

    client = LabelStudio(base_url=url, api_key=token)
    chunks = client.projects.exports.download_sync(project, export_type="JSON",
                                                   download_all_tasks=True)
    out.write_bytes(b"".join(chunks))
    return {"tasks": len(json.loads(out.read_text(encoding="utf-8")))}


def main(argv: list[str]) -> None:
    command, *args = argv
    if command == "validate":
        result = validate(Path(args[0]).read_text(), json.loads(Path(args[1]).read_text()))
    elif command == "create":
        result = create(args[0], args[1], Path(args[2]).read_text(),
                        json.loads(Path(args[3]).read_text()))
    elif command == "export":
        result = export(args[0], args[1], int(args[2]), Path(args[3]))
    else:
        raise SystemExit(f"unknown command {command!r}")
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
