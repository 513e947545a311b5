"""The nnserve BentoML service: every model folder served with typed endpoints built from its card.

    bentoml serve service.app:NNServe --port 3000      (or: make serve)

BentoML runs the workers (one per core), their metrics, access log and request timeout. In each
worker, `service.worker.build` loads the models and builds the /v1 and /v2 apps, mounted here; one
edge (service/protocol/edge.py) takes every request first. Settings are read once, here.
"""

from __future__ import annotations

import asyncio
import gc
import logging

import bentoml
from starlette.types import Receive, Scope, Send

from service.dataplane import drift, feedback
from service.errors import ConfigError
from service.glue import http_protocol
from service.glue.logs import use_format
from service.glue.patches import patch_middlewares, patch_timeout_middleware
from service.protocol.edge import Edge
from service.protocol.transport import send_error
from service.settings import load_settings
from service.shutdown import drain
from service.worker import Server, auth, build

log = logging.getLogger(__name__)
logging.getLogger("service").setLevel(logging.INFO)  # model loads and shutdown steps belong in the log
try:
    settings = load_settings()
    _auth = auth(settings)
except ConfigError as e:  # one line, no traceback: the fix is in the settings
    log.critical("cannot start: %s", e)
    raise SystemExit(2) from None
use_format(settings.log_format)
patch_timeout_middleware()
patch_middlewares()
http_protocol.install(http_protocol.Limits(settings.max_header_bytes, settings.max_headers, settings.header_timeout_s))

_server: Server | None = None  # this worker's, once BentoML has created the service instance


def current() -> Server | None:
    return _server


async def _starting(send: Send) -> None:
    await send_error(send, 503, "starting: the models are loading", [(b"retry-after", b"1")])


async def v1(scope: Scope, receive: Receive, send: Send) -> None:
    await (_server.v1(scope, receive, send) if _server is not None else _starting(send))


async def v2(scope: Scope, receive: Receive, send: Send) -> None:
    await (_server.v2(scope, receive, send) if _server is not None else _starting(send))


@bentoml.asgi_app(v2, path="/v2", name="open-inference-protocol")
@bentoml.asgi_app(v1, path="/v1", name="typed-endpoints")
@bentoml.service(
    name="nnserve",
    workers=settings.workers or "cpu_count",
    traffic={"timeout": settings.request_timeout_s},
    logging={"access": {"enabled": settings.access_log}},
)
class NNServe:
    def __init__(self) -> None:
        global _server
        _server = build(settings)
        drain.install(settings.shutdown_grace_s)
        loop = asyncio.get_running_loop()
        if settings.model_poll_s > 0:  # new, changed and removed versions, and policy changes
            self._watch = loop.create_task(_server.registry.watch(settings.model_poll_s))
        if settings.drift_window_rows > 0:  # the drift windows binned and their gauges set, once a second
            self._drift = loop.create_task(drift.watch(_server.registry))
        if _server.registry.payloads is not None:  # outcome feedback's online measures, every 10 s
            self._online = loop.create_task(feedback.watch(_server.registry, _server.registry.payloads.outcomes))
        # Everything alive now (modules, sessions, cards) lives as long as the worker: move it out of
        # the collector's sight, so full collections under load only walk what requests allocate.
        gc.collect()
        gc.freeze()


NNServe.add_asgi_middleware(Edge, settings=settings, auth=_auth, server=current)
