"""The nnserve BentoML service: every model folder served with typed endpoints built from its card.

    bentoml serve service.app:NNServe --port 3000      (or: make serve)

BentoML runs the worker processes (one per core) and their uvicorn servers. In each worker the service
instance builds the Worker (service/worker.py: the models, the data plane, both HTTP APIs' routes, and
the gRPC server on NNSERVE_GRPC_PORT),
and one edge (service/protocol/edge.py), BentoML's only middleware left (service/glue/patches.py),
takes every request. Settings are read once, here.
"""

from __future__ import annotations

import gc
import logging
import os
import signal

import bentoml
from bentoml._internal.context import server_context

from service.errors import ConfigError
from service.glue import http_protocol, patches
from service.logs import use_format
from service.protocol.admission import Admission
from service.protocol.edge import Edge
from service.settings import load_settings
from service.shutdown import drain
from service.worker import Worker, auth

log = logging.getLogger(__name__)
logging.getLogger("service").setLevel(logging.INFO)  # model loads and shutdown steps belong in the log
try:
    settings = load_settings()
    _auth = auth(settings)
except ConfigError as e:  # one line, no traceback: the fix is in the settings
    log.critical("cannot start: %s", e)
    raise SystemExit(2) from None
use_format(settings.log_format)
patches.patch_timeout_middleware()
patches.patch_middlewares()
http_protocol.install(http_protocol.Limits(settings.max_header_bytes, settings.max_headers, settings.header_timeout_s))

_worker: Worker | None = None  # this process's, once BentoML has created the service instance
# This process's admission control: its HTTP and gRPC predictions are admitted from one count.
_admission = Admission(settings.max_in_flight, settings.max_queue)


def current() -> Worker | None:
    return _worker


def edge_started(edge: Edge) -> None:
    """With none of BentoML's request layers above the edge (they return with tracing), the HTTP protocol
    hands the edge's own requests to it directly (service/glue/http_protocol.py)."""
    if not patches.tracing_configured():
        http_protocol.answer_directly(edge)


def stop_server() -> None:
    """Stops the whole `bentoml serve` from a worker that cannot start: BentoML's arbiter, this worker's parent,
    would only start it again and again while the HTTP port accepts requests no worker answers."""
    if server_context.worker_index is not None:  # a BentoML worker, not an in-process test
        os.kill(os.getppid(), signal.SIGTERM)


@bentoml.service(
    name="nnserve",
    workers=settings.workers or "cpu_count",
    traffic={"timeout": settings.request_timeout_s},
    logging={"access": {"enabled": settings.access_log}},
)
class NNServe:
    def __init__(self) -> None:
        global _worker
        _worker = Worker(settings, admission=_admission)
        drain.install(settings.shutdown_grace_s)
        self._tasks = _worker.start()  # the models watched, drift folded and shared, online measures
        if settings.grpc_port:
            try:
                _worker.serve_grpc(_auth, patches.observe())
            except ConfigError as e:  # the port: one line, and the server stops (no worker without its gRPC half)
                log.critical("cannot start: %s", e)
                stop_server()
                raise SystemExit(2) from None
        # Everything alive now (modules, sessions, cards) lives as long as the worker: move it out of
        # the collector's sight, so full collections under load only walk what requests allocate.
        gc.collect()
        gc.freeze()

    @bentoml.on_shutdown
    async def close(self) -> None:
        """The gRPC server stopped with the app when it ends without a SIGTERM (an in-process app's lifespan):
        its port is not held past the app's life."""
        await drain.close()


NNServe.add_asgi_middleware(
    Edge, settings=settings, auth=_auth, worker=current, observe=patches.observe, admission=_admission,
    on_start=edge_started,
)  # fmt: skip
