"""Ray Serve serving nnserve's models as its docs set one up for production on one machine: one
application per route at nnserve's routes, `num_replicas` one per core, Serve's dynamic batching
(`@serve.batch`) of concurrent one-row requests, its HTTP proxy in front; photos as nnserve's
multipart upload (Starlette's form parser). Validation, encoding, decoding and answers are nnserve's
(loadtests/peers/common.py).

    python loadtests/peers/ray_app.py --port PORT --workers N
"""

from __future__ import annotations

import os
import signal
import sys
import time

import ray
from common import TABULAR, TAGGER, ImageModel, TabularModel, command_line  # noqa: I001 - the script's folder
from pydantic import ValidationError
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse


@serve.deployment
class Tabular:
    def __init__(self, name: str) -> None:
        self.served = TabularModel(name)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.001)
    async def predict(self, rows: list[dict]) -> list[dict]:
        return self.served.predict(rows)

    async def __call__(self, request: Request) -> JSONResponse:
        try:
            row = self.served.validate(await request.body())
        except ValidationError as e:
            return JSONResponse({"detail": e.errors(include_url=False, include_context=False)}, status_code=422)
        return JSONResponse(await self.predict(row))


@serve.deployment
class TabularBatch:
    def __init__(self, name: str) -> None:
        self.served = TabularModel(name)

    async def __call__(self, request: Request) -> JSONResponse:
        try:
            rows = self.served.validate_batch(await request.body())
        except ValidationError as e:
            return JSONResponse({"detail": e.errors(include_url=False, include_context=False)}, status_code=422)
        return JSONResponse(self.served.predict_batch(rows))


@serve.deployment
class Tagger:
    def __init__(self) -> None:
        self.served = ImageModel(TAGGER)

    async def __call__(self, request: Request) -> JSONResponse:
        form = await request.form()
        return JSONResponse(self.served.tag(await form["photo"].read(), int(form.get("top_k", 5))))


def main() -> None:
    args = command_line()
    ray.init(include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    routes = {f"/v1/{name}/predict": (Tabular, name) for name in TABULAR}
    routes |= {f"/v1/{name}/predict-batch": (TabularBatch, name) for name in TABULAR}
    routes |= {"/v1/image-tagging/predict": (Tagger,)} if TAGGER else {}
    # Ray reserves a whole CPU per replica by default: the cores are shared out among all of them.
    share = (os.cpu_count() or 1) / (args.workers * len(routes))
    for route, (deployment, *arguments) in routes.items():
        options = deployment.options(num_replicas=args.workers, ray_actor_options={"num_cpus": share}, name=route)
        serve.run(options.bind(*arguments), name=route, route_prefix=route)

    def stop(*_: object) -> None:  # Ray's own processes go with it, not left behind
        serve.shutdown()
        ray.shutdown()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
