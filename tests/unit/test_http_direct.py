"""The HTTP protocol's direct path (service/glue/http_protocol.py): the edge's own requests go to the edge,
answered in one write, byte for byte what uvicorn's two-message path writes; every other request, and any
request with a proxy's X-Forwarded-* headers, goes the long way through the server's app."""

from __future__ import annotations

import asyncio
import functools
import gc
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle
from uvicorn.server import ServerState

from service.glue.http_protocol import GuardedHttpTools, Limits
from service.protocol.context import Context
from service.protocol.transport import ANSWER, respond


class Transport:
    """What uvicorn's protocol asks of a socket's transport; every write kept apart."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = self.eof = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def writelines(self, parts: Any) -> None:
        self.writes.append(b"".join(parts))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 3000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True


class App:
    """Answers every request with the same JSON through `respond`, as the edge's handlers do, and notes
    which app took it and whether it was offered the whole-answer extension."""

    def __init__(self, name: str, taken: list[tuple[str, bool]]) -> None:
        self.name, self.taken = name, taken

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        ctx = Context(7, scope["method"], scope["path"], scope["headers"], 0.0)
        ctx.answer = (scope.get("extensions") or {}).get(ANSWER)
        self.taken.append((self.name, ctx.answer is not None))
        while (await receive()).get("more_body"):
            pass
        await respond(ctx, send, 200, b'{"price":1.0}', [(b"x-extra", b"yes")])


@pytest.fixture
def connect():
    """A connection to a protocol whose server app is "app", with "edge" registered for direct requests
    (or none); returns the transport and the list of (app, offered the extension) per request."""
    made = []

    def _connect(edge: bool = True) -> tuple[GuardedHttpTools, Transport, list[tuple[str, bool]]]:
        taken: list[tuple[str, bool]] = []
        config = Config(app=App("app", taken), http="httptools", log_config=None)
        config.load()
        GuardedHttpTools.limits = Limits()
        GuardedHttpTools.edge = App("edge", taken) if edge else None
        protocol = GuardedHttpTools(config=config, server_state=ServerState(), app_state={})
        transport = Transport()
        protocol.connection_made(transport)
        made.append(protocol)
        return protocol, transport, taken

    yield _connect
    GuardedHttpTools.edge = None
    for protocol in made:
        protocol.connection_lost(None)


def run(test: Any) -> Any:
    """An async test run in an event loop of its own (the protocol takes the loop it is made in)."""

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return wrapper


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def request(method: str = "POST", path: str = "/v1/housing-price/predict", extra: bytes = b"",
            version: bytes = b"1.1") -> bytes:  # fmt: skip
    body = b'{"a":1}' if method == "POST" else b""
    return (f"{method} {path} HTTP/".encode() + version + b"\r\nHost: t\r\n" + extra
            + b"Content-Length: %d\r\n\r\n" % len(body) + body)  # fmt: skip


ANSWERED = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 13\r\nx-extra: yes\r\n"
            b"x-bentoml-request-id: 0000000000000007\r\n\r\n{\"price\":1.0}")  # fmt: skip


@run
async def test_the_edges_requests_go_to_the_edge_answered_in_one_write(connect):
    protocol, transport, taken = connect()
    protocol.data_received(request())
    await settle()
    protocol.data_received(request(path="/v2/models/housing-price/infer"))  # kept alive: the next one too
    await settle()
    assert taken == [("edge", True), ("edge", True)]
    assert transport.writes == [ANSWERED, ANSWERED] and not transport.closed


@run
async def test_a_direct_request_leaves_nothing_for_the_collector(connect):
    """Its cycle, the cycle's Event and its answer call freed as the request ends (held in a reference cycle,
    they were left to the garbage collector, a dozen objects a request that brought a collection round every
    45 one-row predictions)."""
    protocol, transport, taken = connect()
    protocol.data_received(request())  # the first request makes what lives on (caches); not counted
    await settle()
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds goes to gc.garbage, not freed
    try:
        for _ in range(3):
            protocol.data_received(request())
            await settle()
        gc.collect()
        # (what a thread of the test run might leave meanwhile is not this request's)
        own = (RequestResponseCycle, asyncio.Event, functools.partial)
        left = [type(o).__name__ for o in gc.garbage if isinstance(o, own)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert transport.writes == [ANSWERED] * 4 and [t for t, _ in taken] == ["edge"] * 4
    assert left == []


@pytest.mark.parametrize(
    ("path", "extra"),
    [("/metrics", b""), ("/readyz", b""), ("/v2", b""), ("http://t/v1/housing-price/predict", b""),
     ("/v1/housing-price/predict", b"X-Forwarded-For: 10.0.0.1\r\n"),
     ("/v1/housing-price/predict", b"x-forwarded-proto: https\r\n")],
    ids=["bentoml-route", "page", "v2-root", "absolute-form", "forwarded-for", "forwarded-proto"],
)  # fmt: skip
@run
async def test_other_requests_take_the_long_way(connect, path, extra):
    protocol, transport, taken = connect()
    protocol.data_received(request(path=path, extra=extra))
    await settle()
    assert taken == [("app", False)]
    assert transport.writes == [ANSWERED]  # the head held and written with the body (OneWrite)


@run
async def test_without_an_edge_every_request_takes_the_long_way(connect):
    protocol, transport, taken = connect(edge=False)
    protocol.data_received(request())
    await settle()
    assert taken == [("app", False)] and transport.writes == [ANSWERED]


@pytest.mark.parametrize(
    ("method", "extra", "version"),
    [("POST", b"", b"1.1"), ("HEAD", b"", b"1.1"), ("POST", b"Connection: close\r\n", b"1.1"),
     ("POST", b"", b"1.0"), ("GET", b"", b"1.0")],
    ids=["keep-alive", "head", "client-closes", "http-1.0", "get-1.0"],
)  # fmt: skip
@run
async def test_the_direct_answer_is_byte_for_byte_the_long_ways(connect, method, extra, version):
    """The same answer both ways: the same bytes, the connection left the same (closed or not)."""
    results = []
    for edge in (True, False):
        protocol, transport, taken = connect(edge=edge)
        protocol.data_received(request(method, extra=extra, version=version))
        await settle()
        results.append((b"".join(transport.writes), transport.closed, taken[0][1]))
    (direct, direct_closed, offered), (long, long_closed, _) = results
    assert offered and direct == long and direct_closed == long_closed
    if method == "HEAD":
        assert direct.endswith(b"\r\n\r\n") and b"content-length: 13" in direct
    if extra or version == b"1.0":
        assert direct_closed and b"connection: close\r\n" in direct


@run
async def test_pipelined_requests_are_answered_in_order(connect):
    protocol, transport, taken = connect()
    protocol.data_received(request() + request(path="/metrics") + request())
    await settle()
    assert taken == [("edge", True), ("app", False), ("edge", True)]
    assert transport.writes == [ANSWERED] * 3


class Scopes:
    """An ASGI app that keeps the scope of every request and answers it."""

    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.scopes.append({k: v for k, v in scope.items() if k != "extensions"})
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})


TARGETS = ["/v1/housing-price/predict", "/v1/a%20b/predict?x=1&y=%2F", "/v2/models/m/infer#frag", "/readyz?",
           "//v1/double", "/v1/a;b/predict", "http://host:3000/v1/x/predict?q=1", "/v1/%7Eme/predict"]  # fmt: skip


@pytest.mark.parametrize("root_path", ["", "/api"])
@run
async def test_the_protocols_own_callbacks_make_uvicorns_scope(root_path):
    """GuardedHttpTools runs uvicorn's parser callbacks as its own (one call each): every request's scope is
    the one uvicorn's protocol makes, whichever way the request goes, for paths, queries, escapes, fragments,
    absolute form, HTTP/1.0 and Expect: 100-continue."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    requests = [request("POST", target) for target in TARGETS]
    requests += [request("GET", "/v1/models", version=b"1.0"), request(extra=b"Expect: 100-continue\r\n"),
                 request(extra=b"X-Forwarded-For: 10.0.0.1\r\nUser-Agent: T\r\n")]  # fmt: skip
    seen = []
    for protocol_class, edge in ((HttpToolsProtocol, False), (GuardedHttpTools, False), (GuardedHttpTools, True)):
        app = Scopes()
        config = Config(app=app, http="httptools", log_config=None, root_path=root_path)
        config.load()
        GuardedHttpTools.limits, GuardedHttpTools.edge = Limits(), app if edge else None
        for data in requests:
            protocol = protocol_class(config=config, server_state=ServerState(), app_state={"k": 1})
            protocol.connection_made(Transport())  # type: ignore[arg-type]
            protocol.data_received(data)
            await settle()
            protocol.connection_lost(None)
        seen.append(app.scopes)
    GuardedHttpTools.edge = None
    assert len(seen[0]) == len(requests)
    assert seen[1] == seen[0] and seen[2] == seen[0]


@run
async def test_an_idle_kept_alive_connection_is_closed_after_the_keep_alive_timeout(connect):
    """uvicorn's keep-alive timeout, kept by the connection's one timer: not while requests keep coming,
    and after the timeout once nothing has come since the last answer."""
    protocol, transport, taken = connect()
    protocol.timeout_keep_alive = 0.3
    for _ in range(4):  # each within the timeout of the answer before it
        protocol.data_received(request())
        await asyncio.sleep(0.15)
        assert not transport.closed
    await asyncio.sleep(0.4)
    assert transport.closed and len(taken) == 4 and transport.writes == [ANSWERED] * 4
