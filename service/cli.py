"""The `nnserve` command: serve the models, and list, read, ask and manage a running service.

    nnserve serve --port 3000 --workers 2 --models-dir models
    nnserve models                                   # a line per model
    nnserve predict housing-price '{"sqft_living": 1800, "bedrooms": 3, "zipcode": 98103}'
    nnserve predict image-tagging --photo cat.jpg
    nnserve explain housing-price '{"sqft_living": 1800, "bedrooms": 3, "zipcode": 98103}'
    nnserve canary housing-price 2 10                # 10% of unpinned requests to version 2
    nnserve promote housing-price 2

Every command but `serve` talks to a running service at --url (NNSERVE_URL, default
http://127.0.0.1:3000) with --api-key (NNSERVE_API_KEY) when keys are set. Each command's help is
the summary of the API route it calls, read from the same OpenAPI document the service serves, so the
two cannot say different things. Exit codes: 0 done, 1 the service refused (its error on one line),
2 a usage mistake, 3 no service answered at --url.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click
import httpx

DOCUMENT = json.loads((Path(__file__).parent / "protocol" / "static" / "openapi.json").read_text())
REFUSED, UNREACHABLE = 1, 3


def api_summary(method: str, route: str) -> str:
    """The OpenAPI document's summary of a route: the command's help starts with it."""
    return DOCUMENT["paths"][route][method.lower()]["summary"]


def described(method: str, route: str, usage: str = "") -> str:
    return f"{api_summary(method, route)}\n\n{method} {route}" + (f"\n\n{usage}" if usage else "")


class Service:
    """The running service: one request, its answer as JSON, or one line and the exit code."""

    def __init__(self, url: str, api_key: str | None) -> None:
        self.url = url.rstrip("/")
        self.headers = {"X-API-Key": api_key} if api_key else {}

    def call(self, method: str, path: str, raw: bool = False, **kwargs: Any) -> Any:
        try:
            headers = {**self.headers, **kwargs.pop("headers", {})}
            r = httpx.request(method, self.url + path, headers=headers, timeout=60, **kwargs)
        except httpx.HTTPError as e:
            _fail(f"no answer from {self.url} ({type(e).__name__}: {e}): is the service running? (--url)", UNREACHABLE)
        if r.status_code >= 400:
            _fail(f"{method} {path}: {r.status_code} {_error_line(r)}", REFUSED)
        return r.content if raw else r.json() if r.content else {}


def _error_line(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text.strip().splitlines()[0] if r.text.strip() else r.reason_phrase
    if isinstance(body, dict):
        detail = body.get("detail")
        if isinstance(detail, list) and detail and isinstance(detail[0], dict):
            return "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg', '')}" for d in detail)
        return str(body.get("error") or detail or body)
    return str(body)


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _show(answer: Any) -> None:
    click.echo(json.dumps(answer, indent=2))


pass_service = click.make_pass_decorator(Service)


@click.group(help=__doc__.split("\n\n")[0])
@click.option("--url", envvar="NNSERVE_URL", default="http://127.0.0.1:3000", show_default=True,
              help="The running service (env NNSERVE_URL).")  # fmt: skip
@click.option("--api-key", envvar="NNSERVE_API_KEY", default=None, help="An API key (env NNSERVE_API_KEY).")
@click.pass_context
def main(ctx: click.Context, url: str, api_key: str | None) -> None:
    ctx.obj = Service(url, api_key)


@main.command(help="Serve the models in a folder: `make serve`'s command, with its settings as options.")
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--port", default=3000, show_default=True, type=int)
@click.option("--grpc-port", default=None, type=int,
              help="The gRPC port (NNSERVE_GRPC_PORT, default 8001; 0: none), on --host too.")  # fmt: skip
@click.option("--workers", default=0, show_default=True, type=int, help="Worker processes; 0: one per CPU core.")
@click.option("--models-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The models directory (NNSERVE_MODELS_DIR; default: the committed models/).")  # fmt: skip
def serve(host: str, port: int, grpc_port: int | None, workers: int, models_dir: Path | None) -> None:
    env = {**os.environ, "NNSERVE_WORKERS": str(workers)} if workers else dict(os.environ)
    env["NNSERVE_GRPC_HOST"] = host
    if grpc_port is not None:
        env["NNSERVE_GRPC_PORT"] = str(grpc_port)
    if models_dir is not None:
        if not models_dir.is_dir():
            _fail(f"--models-dir {models_dir}: no such directory", 2)
        env["NNSERVE_MODELS_DIR"] = str(models_dir.resolve())
    bentoml = Path(sys.executable).with_name("bentoml")
    command = [str(bentoml), "serve", "service.app:NNServe", "--host", host, "--port", str(port)]
    os.chdir(Path(__file__).resolve().parents[1])  # the service's module path, as `make serve` runs it
    os.execve(command[0], command, env)


@main.command(help=described("GET", "/v1/models"))
@pass_service
def models(service: Service) -> None:
    answer = service.call("GET", "/v1/models")
    rows = [("NAME", "VERSIONS", "DEFAULT", "TASK", "PROVIDER", "STATUS", "METRIC")]
    for m in answer["models"]:
        metric = ", ".join(f"{k} {v:.4g}" for k, v in m.get("metric", {}).items())
        provider = m.get("provider", "").replace("ExecutionProvider", "")
        rows.append((m["name"], ",".join(m.get("versions", [])), m.get("default", ""), m.get("task", ""), provider,
                     m["status"], metric))  # fmt: skip
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


@main.command(help=described("GET", "/v1/models/{name}"))
@click.argument("name")
@pass_service
def card(service: Service, name: str) -> None:
    _show(service.call("GET", f"/v1/models/{name}"))


GROUP = "image-tagging"  # the route every image classifier answers at, the request naming its model
PREDICT_HELP = """A prediction from the model's typed route (its summary: `nnserve card NAME`, or /docs).

POST /v1/{model}/predict, or predict-batch when REQUEST is a list or holds the model's batch field.

REQUEST is JSON, @file, or - for stdin; --photo sends a photo file to an image classifier instead."""
EXPLAIN_HELP = """Explain a prediction: each field's Shapley value in the answer's unit (a table row), or where in
the photo the top tag comes from (an occlusion map).

POST /v1/{model}/explain, explain-batch for a list, or /v1/image-tagging/explain with --photo.

REQUEST is JSON, @file, or - for stdin; --png FILE writes the photo with its map over it."""


def _request(text: str) -> Any:
    """JSON from the argument, a file (@path) or stdin (-)."""
    text = sys.stdin.read() if text == "-" else Path(text[1:]).read_text() if text[:1] == "@" else text
    try:
        return json.loads(text)
    except ValueError as e:
        _fail(f"the request is not JSON ({e})", 2)


def _photo(service: Service, name: str, verb: str, photo: Path, version: str | None, **kwargs: Any) -> Any:
    path = f"/v1/{GROUP}" + (f"/versions/{version}" if version else "") + f"/{verb}"
    form = {} if name == GROUP else {"model": name}
    return service.call("POST", path, files={"photo": (photo.name, photo.read_bytes())}, data=form, **kwargs)


def _rows(service: Service, name: str, verb: str, body: Any, prefix: str) -> Any:
    """One row, or a batch (a list, or the model's batch field): the action and its route."""
    batch_field = (service.call("GET", f"/v1/models/{name}").get("api") or {}).get("batch_field") or "rows"
    if isinstance(body, list):
        body = {batch_field: body}
    batch = isinstance(body, dict) and batch_field in body
    return service.call("POST", f"{prefix}/{verb}{'-batch' if batch else ''}", json=body)


@main.command(help=PREDICT_HELP)
@click.argument("name")
@click.argument("request", required=False)
@click.option("--photo", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="A photo file.")
@click.option("--version", default=None, help="Pin a version (the policy's default otherwise).")
@pass_service
def predict(service: Service, name: str, request: str | None, photo: Path | None, version: str | None) -> None:
    if photo is not None:
        _show(_photo(service, name, "predict", photo, version))
        return
    if request is None:
        _fail("give the request as JSON, @file or - (stdin), or --photo PATH", 2)
    prefix = f"/v1/{name}" + (f"/versions/{version}" if version else "")
    _show(_rows(service, name, "predict", _request(request), prefix))


@main.command(help=EXPLAIN_HELP)
@click.argument("name")
@click.argument("request", required=False)
@click.option("--photo", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="A photo file.")
@click.option("--png", type=click.Path(dir_okay=False, path_type=Path), help="With --photo: write the map as a PNG.")
@click.option("--version", default=None, help="Pin a version (the policy's default otherwise).")
@pass_service
def explain(service: Service, name: str, request: str | None, photo: Path | None, png: Path | None,
            version: str | None) -> None:  # fmt: skip
    if photo is not None:
        if png is None:
            _show(_photo(service, name, "explain", photo, version))
            return
        png.write_bytes(_photo(service, name, "explain", photo, version, raw=True, headers={"accept": "image/png"}))
        click.echo(f"wrote {png}")
        return
    if request is None:
        _fail("give the request as JSON, @file or - (stdin), or --photo PATH", 2)
    prefix = f"/v1/{name}" + (f"/versions/{version}" if version else "")
    _show(_rows(service, name, "explain", _request(request), prefix))


@main.command(help=described("POST", "/v2/repository/models/{name}/load"))
@click.argument("name")
@pass_service
def load(service: Service, name: str) -> None:
    service.call("POST", f"/v2/repository/models/{name}/load", json={})
    click.echo(f"{name}: loaded (every worker serves it)")


@main.command(help=described("POST", "/v2/repository/models/{name}/unload"))
@click.argument("name")
@pass_service
def unload(service: Service, name: str) -> None:
    service.call("POST", f"/v2/repository/models/{name}/unload", json={})
    click.echo(f"{name}: unloaded")


@main.command(help=described("GET", "/v1/models/{name}/policy", "With a POLICY (JSON, @file or -): "
                             + api_summary("PUT", "/v1/models/{name}/policy")))  # fmt: skip
@click.argument("name")
@click.argument("policy", required=False)
@pass_service
def policy(service: Service, name: str, policy: str | None) -> None:
    if policy is None:
        _show(service.call("GET", f"/v1/models/{name}/policy"))
        return
    _show(service.call("PUT", f"/v1/models/{name}/policy", json=_request(policy)))


def _change(service: Service, name: str, **changes: Any) -> None:
    """The model's policy with `changes`, put back (a management call: every worker serves it on return)."""
    current = service.call("GET", f"/v1/models/{name}/policy")["policy"]
    updated = {k: v for k, v in {**current, **changes}.items() if v is not None}
    _show(service.call("PUT", f"/v1/models/{name}/policy", json=updated))


@main.command(short_help="Send PERCENT of unpinned requests to VERSION.",
              help=described("PUT", "/v1/models/{name}/policy", "canary NAME VERSION PERCENT: that share of "
                             "unpinned requests goes to VERSION (sticky per X-Request-Key)."))  # fmt: skip
@click.argument("name")
@click.argument("version")
@click.argument("percent", type=click.FloatRange(0, 100))
@pass_service
def canary(service: Service, name: str, version: str, percent: float) -> None:
    _change(service, name, canary={"version": version, "weight": percent})


@main.command(short_help="Make VERSION the default; remove the canary.",
              help=described("PUT", "/v1/models/{name}/policy", "promote NAME VERSION: VERSION becomes the "
                             "default, and the canary is removed."))  # fmt: skip
@click.argument("name")
@click.argument("version")
@pass_service
def promote(service: Service, name: str, version: str) -> None:
    _change(service, name, default=version, canary=None)


@main.command(short_help="Remove the canary; with VERSION, make it the default again.",
              help=described("PUT", "/v1/models/{name}/policy", "rollback NAME [VERSION]: the canary is removed; "
                             "with VERSION, it becomes the default again."))  # fmt: skip
@click.argument("name")
@click.argument("version", required=False)
@pass_service
def rollback(service: Service, name: str, version: str | None) -> None:
    _change(service, name, canary=None, **({"default": version} if version else {}))


if __name__ == "__main__":
    main()
