"""`synthaug serve RECIPE`: the command that starts the HTTP service of `synthaug.serve`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from synthaug.cli_common import user_errors
from synthaug.errors import ConfigError
from synthaug.overrides import build_pipeline
from synthaug.serve import LOOPBACK, Service, make_app, require

console = Console(stderr=True)
TOKEN_ENV = "SYNTHAUG_SERVE_TOKEN"


def serve(
    recipe: Annotated[str, typer.Argument(help="A built-in recipe name or a YAML file.")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    token: Annotated[str | None, typer.Option(
        help=f"Bearer token clients must send (default: ${TOKEN_ENV}).")] = None,
    no_auth: Annotated[bool, typer.Option(
        "--no-auth", help="No token (only when listening on a loopback address).")] = False,
    state: Annotated[Path, typer.Option(
        "--state", help="Folder of the response cache (cache.sqlite), kept between starts.")]
    = Path("serve-state"),
    max_pending: Annotated[int, typer.Option(
        min=1, help="Input records in progress across requests, at most; a request beyond "
        "is answered 429 with Retry-After.")] = 256,
    max_body_bytes: Annotated[int, typer.Option(
        min=1, help="Largest request body; a larger one is answered 413 unread.")]
    = 16 << 20,
    backend: Annotated[str | None, typer.Option(help="Backend for the default role.")] = None,
    base_url: Annotated[str | None, typer.Option(
        help="OpenAI-compatible base URL (implies --backend openai).")] = None,
    model: Annotated[str | None, typer.Option(help="Model name.")] = None,
    concurrency: Annotated[int | None, typer.Option(
        min=1, help="In-flight request limit of the default role.")] = None,
    sets: Annotated[list[str] | None, typer.Option(
        "--set", help="Step option, STEP.FIELD=VALUE (repeatable).")] = None,
    backends_file: Annotated[Path | None, typer.Option(
        "--backends", help="YAML file of backend roles replacing the recipe's.")] = None,
) -> None:
    """Serve a recipe over HTTP: POST records to /v1/records, read records as they complete.

    The recipe is checked and its backends built before the port is bound: a bad recipe or
    option exits 2 at once. Stop with Ctrl-C or SIGTERM (requests in progress are cancelled).
    """
    with user_errors(console):
        require()
        secret = token or os.environ.get(TOKEN_ENV) or None
        if secret is None and not no_auth:
            raise ConfigError(f"pass --token or set {TOKEN_ENV} (or --no-auth on a loopback "
                              "address)", field="--token")
        if no_auth and host not in LOOPBACK:
            raise ConfigError(f"--no-auth listens only on a loopback address, not {host}",
                              field="--no-auth")
        pipeline = build_pipeline(recipe, backends_file=backends_file, choices={
            "backend": backend, "base_url": base_url, "model": model,
            "concurrency": concurrency}, backend_options=None, sets=sets)
        service = Service(pipeline, state_dir=state,
                          token=None if no_auth else secret, max_pending=max_pending,
                          max_body_bytes=max_body_bytes).open()
    import uvicorn

    console.print(f"serving {service.pipeline.name} on http://{host}:{port} "
                  f"(cache {state / 'cache.sqlite'})", soft_wrap=True)
    stopped = f"stopped: {service.pipeline.name} (clients and cache closed)"
    uvicorn.run(make_app(service, lambda: console.print(stopped, soft_wrap=True)), host=host,
                port=port, log_level="warning", timeout_graceful_shutdown=5)
