"""uvicorn's HTTP/1.1 protocol (httptools), with the bounds it lacks on what comes before a request.

uvicorn's httptools protocol reads request headers without any limit: a 100 MB header value was read
whole and answered 200 after 11.6 s (the worker +140 MB, other clients stalled), 200,000 headers were
taken, and a connection that never finished its headers was held forever (18,000 held; none closed
after 120 s idle). All of it before any authentication. This subclass, in its place in every worker:

- counts a request's header bytes (the request line included) and its headers as they are parsed:
  past NNSERVE_MAX_HEADER_BYTES or NNSERVE_MAX_HEADERS, 431 and the connection closes. Bytes are fed
  to the parser in slices of that size, so a header line too long to finish is refused before it is
  held whole;
- gives the headers NNSERVE_HEADER_TIMEOUT_S from the connection's first byte (or its opening, or
  the request's first byte on a kept-alive connection): late, 408 and close (a connection that sent
  nothing is closed without an answer);
- refuses a transfer coding other than chunked (501): `gzip, chunked` was read as chunked alone;
- answers a request that cannot be parsed after the requests before it on the connection have been
  answered: a valid pipelined request followed by a malformed one lost its answer to the 400;
- closes a refused connection the way nginx does (see _send_refusal), so the refusal reaches a client
  still sending;
- writes an answer's head with its body's first bytes, in one write (OneWrite): uvicorn writes them apart,
  two system calls and two TCP segments for every answer;
- hands the edge's own requests (/v1 and /v2) to the edge itself, once the app says the edge is alone
  (`answer_directly`: no BentoML request layer above it), skipping the three ASGI layers in between
  (uvicorn's proxy headers, Starlette's app and its error handler: no work of theirs is lost, see
  `direct`), and offers those requests a whole answer in one step, the `nnserve.answer` extension in
  their scope (`_answer`): the answer's bytes built once and written once, without two ASGI messages and
  uvicorn's per-header checks;
- keeps one timer per connection for the header timeout and uvicorn's keep-alive timeout, where uvicorn
  arms and cancels a timer for every request, and runs uvicorn's parser callbacks as its own (one call
  each, not two): the same scope, cycle and answers, for less of a worker's CPU a request.

The answers are nnserve's JSON errors. Installed by `install` (service/app.py), which checks that the
uvicorn code it builds on is the code it was written for.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import urllib.parse
import weakref
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import httptools
import uvicorn
import uvicorn.config
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from service.pinned import source_sha256
from service.protocol.transport import ANSWER

log = logging.getLogger(__name__)
PATCHED_VERSION = "0.54.0"
SOURCES_SHA256 = {  # what the subclass overrides or reproduces, as it was written when the subclass was
    "connection_made": "6efb565ff3d36b916c29bd42330a2b99b601b48932389e396e5ac53dbef6b91c",
    "connection_lost": "c91a4c9bf2e29c554a97418b5f3064e97f6e0ceaba3b90fc35a3460076c705ab",
    "data_received": "010a7ae59a5d3b1a5e7326ce246878568629d126a076d8af5ba10cab040fae43",
    "on_message_begin": "96d377fdc7c2baef943c2bd245003abc53566ddb35777e0f4c7bc754198b5457",
    "on_url": "37be44e962b04ca87f76428ff8d7a3306ab601ffd5793d185e87c2295f0c6b6e",
    "on_header": "65d62c044f61fdbd354dcb3401aa590789259bfbdbc1c07512150ec924258cd6",
    "on_headers_complete": "1ea8589acfad92d8ff9182775f337d98fc469e0fa39642a83195fca920f5ca96",
    "on_response_complete": "64e254f28e389e7614f2c828176d639174e66aa9d814a4b06624ec86ec0a5b95",
    "_start_asgi_task": "9c08c2571ae9b0380320a24c20c3af18d165f168c21bc3aaf14754a5b0fc2b8a",
}
CYCLE_SHA256 = {  # how the request cycle writes (OneWrite relies on it: the head in one write, then the body)
    "send": "abdd8601b326a8da972436918d3a954e1ef39c6bf0cd9e1c1954c2e798d0bb9c",
    "receive": "8124ae006be71184810da91d586b97c4b3b9ae43e28984bc94f81e26d20af3e6",
}


DIRECT = (b"/v1/", b"/v2/")  # raw paths the edge answers itself, never passing them to BentoML's app below it
SMALL_BODY = 64 * 1024  # below it, an answer's head and body are joined in one bytes object for the write
LINGER_S, LINGER_BYTES = 2.0, 1 << 20  # after a refusal: how long, and how much, the client's rest is read


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 64 * 1024
    max_headers: int = 100
    timeout_s: float = 20.0


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class OneWrite:
    """The connection's transport as uvicorn's request cycle sees it: the head of an answer (its status line
    and headers, one write) is held and goes out with the next write, the body's, as one system call and one
    TCP segment; on its own at the end of the answer when there is no body (the protocol flushes it), or
    before a close. Everything written keeps its order. An interim answer (100 Continue) is not held."""

    __slots__ = ("transport", "head")

    def __init__(self, transport: Any) -> None:
        self.transport, self.head = transport, b""

    def write(self, data: bytes) -> None:
        head = self.head
        if head:
            self.head = b""
            if len(data) < SMALL_BODY:
                self.transport.write(head + data)
            else:  # a large body is not copied: one vectored write
                self.transport.writelines((head, data))
        elif data[:9] == b"HTTP/1.1 " and data[9:10] != b"1":
            self.head = bytes(data)
        else:
            self.transport.write(data)

    def flush(self) -> None:
        if self.head:
            head, self.head = self.head, b""
            self.transport.write(head)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class GuardedHttpTools(HttpToolsProtocol):
    limits: ClassVar[Limits] = Limits()
    edge: ClassVar[Any] = None  # the app the edge's own requests go to directly (answer_directly), if any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn's own access line is on when its logger has a handler anywhere up the tree (BentoML's,
        # on the root), and each answer then builds its fields and calls a logger that is off at the
        # root's WARNING: 2% of a worker's CPU on one-row predictions. The edge writes BentoML's line.
        self.access_log = self.access_log and self.access_logger.isEnabledFor(logging.INFO)
        self.in_headers = False  # the current request's headers are being read
        self.header_bytes = self.header_count = 0  # as parsed: the request line and each header
        self.raw_bytes = 0  # as received while in the headers: what the parser may hold unparsed
        self.max_bytes, self.max_headers = self.limits.max_bytes, self.limits.max_headers
        self.coded = False  # the current request has a Transfer-Encoding header (checked once they are all in)
        self.timer: Any = None  # the connection's one timer: the header timeout and keep-alive (_too_slow)
        self.timer_at = 0.0  # loop time it is due
        self.headers_since = 0.0  # loop time the current request's headers (or the connection) began
        self.idle_since: float | None = None  # loop time the last answer completed, while nothing has come since
        self.refused: Refused | None = None  # answered (or to answer) with this, then closed
        self.drained = 0  # bytes read and dropped after a refusal
        self.forwarded = False  # the current request names a proxy's client (X-Forwarded-*)

    # --- the connection ------------------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.one_write = OneWrite(transport)  # what each request's cycle writes through
        self.headers_since = self.loop.time()
        self._arm(self.limits.timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    # One timer per connection, not one per request: a request notes when its headers began, an answer when
    # it completed, and the timer, when it fires, looks. uvicorn arms a keep-alive timer after every answer
    # and cancels it at the next request's first bytes; the header timeout, armed and cancelled per request,
    # cost a libuv timer each (1% of a worker's CPU on one-row predictions), the keep-alive timer as much.
    def _arm(self, delay: float) -> None:
        self.timer_at = self.loop.time() + delay
        self.timer = self.loop.call_later(delay, self._too_slow)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _too_slow(self) -> None:
        self.timer = None
        if self.refused is not None or self.transport.is_closing():
            return
        if self.idle_since is not None:  # between requests: uvicorn's keep-alive timeout
            left = self.idle_since + self.timeout_keep_alive - self.loop.time()
            if left > 0:
                self._arm(left)
            else:
                self.transport.close()
            return
        waiting = self.in_headers or self.cycle is None  # reading headers, or nothing received yet
        if not waiting:  # in a body or an answer: the request timeout sees to those; the answer re-arms
            return
        left = self.headers_since + self.limits.timeout_s - self.loop.time()
        if left > 0:  # headers that began after the timer was set
            self._arm(left)
        elif not self.in_headers:  # nothing sent at all: close, no answer
            self.transport.close()
        else:
            self._refuse(Refused(408, f"request headers not complete within {self.limits.timeout_s:g} s "
                                      "(NNSERVE_HEADER_TIMEOUT_S)"))  # fmt: skip

    def data_received(self, data: bytes) -> None:
        if self.refused is not None:  # refused: what still comes is read and dropped, up to a bound
            self.drained += len(data)
            if self.drained > LINGER_BYTES:
                self.transport.close()
            return
        self.idle_since = None  # (uvicorn cancels its keep-alive timer here)
        step = self.max_bytes
        for start in range(0, len(data), step):
            piece = data[start : start + step]
            was_in_headers = self.in_headers
            try:
                self.parser.feed_data(piece)
            except httptools.HttpParserCallbackError as e:
                cause = e.__context__
                self._refuse(cause if isinstance(cause, Refused) else Refused(400, "invalid HTTP request"))
                return
            except httptools.HttpParserError:
                self._refuse(Refused(400, "invalid HTTP request: it cannot be parsed"))
                return
            except httptools.HttpParserUpgrade:
                if self._should_upgrade():
                    self.handle_websocket_upgrade()
                else:
                    self._unsupported_upgrade_warning()
                return
            if was_in_headers and self.in_headers:
                self.raw_bytes += len(piece)
                if self.raw_bytes > 2 * self.max_bytes:  # a header line too long to finish
                    self._refuse(self._too_large())
                    return
            if self.transport.is_closing():
                return

    # --- the parser's callbacks ------------------------------------------------------------------------
    # uvicorn's own, with the bounds added, in one method each: calling uvicorn's through super() cost a
    # Python call for every callback of every request. SOURCES_SHA256 pins the code they reproduce.
    def on_message_begin(self) -> None:
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self.scope = {  # type: ignore[typeddict-item]
            "type": "http",
            "asgi": {"version": self.asgi_version, "spec_version": "2.3"},
            "http_version": "1.1",
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,  # type: ignore[typeddict-item]
            "root_path": self.root_path,
            "headers": self.headers,
            "state": self.app_state.copy(),
        }
        self.in_headers, self.header_bytes, self.header_count, self.raw_bytes = True, 0, 0, 0
        self.forwarded = self.coded = False
        self.headers_since = self.loop.time()
        if self.timer is None:
            self._arm(self.limits.timeout_s)

    def on_url(self, url: bytes) -> None:
        self.header_bytes += len(url)
        if self.header_bytes > self.max_bytes:
            raise self._too_large()
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value) + 4
        self.header_count += 1
        if self.header_bytes > self.max_bytes:
            raise self._too_large()
        if self.header_count > self.max_headers:
            raise Refused(431, f"more than {self.max_headers} request headers (NNSERVE_MAX_HEADERS)")
        name = name.lower()
        if name[:12] == b"x-forwarded-":
            self.forwarded = True
        elif name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        elif name == b"transfer-encoding":
            self.coded = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.in_headers = False
        if self.coded:
            self._check_codings()
        parser, scope = self.parser, self.scope
        http_version = parser.get_http_version()
        scope["method"] = parser.get_method().decode("ascii")
        if http_version != "1.1":
            scope["http_version"] = http_version
        if parser.should_upgrade() and self._should_upgrade():
            return
        url = self.url
        if url[:1] == b"/" and b"?" not in url and b"#" not in url:  # a plain path: what parse_url gives for it
            raw_path, query = url, b""
        else:
            parsed_url = httptools.parse_url(url)
            raw_path, query = parsed_url.path, parsed_url.query or b""
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        scope["path"] = self.root_path + path
        scope["raw_path"] = self.root_path.encode("ascii") + raw_path
        scope["query_string"] = query

        direct = False
        if self.limit_concurrency is not None and (
            len(self.connections) >= self.limit_concurrency or len(self.tasks) >= self.limit_concurrency
        ):
            app = service_unavailable
            self.logger.warning("Exceeded concurrency limit.")
        elif self.direct():
            app, direct = self.edge, True
        else:
            app = self.app

        existing_cycle = self.cycle
        self.cycle = cycle = RequestResponseCycle(
            scope=scope,
            transport=self.one_write,  # (uvicorn's: the transport itself) the answer's head and body in one write
            flow=self.flow,
            logger=self.logger,
            access_logger=self.access_logger,
            access_log=self.access_log,
            default_headers=self.server_state.default_headers,
            message_event=asyncio.Event(),
            expect_100_continue=self.expect_100_continue,
            keep_alive=http_version != "1.0" and parser.should_keep_alive(),
            on_response=self.on_response_complete,
        )
        if direct:  # the request's own answer, holding its cycle weakly: the cycle holds the scope, the scope
            # the answer; held strongly, each request left 13 objects only the collector could free, which
            # brought it round every 45 requests (3,150 instructions a request more: make instructions)
            scope["extensions"] = {ANSWER: partial(self._answer, weakref.ref(cycle))}  # type: ignore[typeddict-unknown-key]
        if existing_cycle is None or existing_cycle.response_complete:
            self._start_asgi_task(cycle, app)
        else:  # pipelined requests wait their turn
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, app))

    def _check_codings(self) -> None:
        for name, value in self.headers:
            if name == b"transfer-encoding":
                codings = [c.strip().lower() for c in value.split(b",")]
                if codings != [b"chunked"]:
                    shown = value.decode("latin-1")[:100]
                    raise Refused(501, f"Transfer-Encoding {shown!r} is not supported: send chunked, or a "
                                       "Content-Length (a compressed body: Content-Encoding)")  # fmt: skip

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        if self.config.reset_contextvars:
            task = self.loop.create_task(cycle.run_asgi(app), context=contextvars.Context())
        else:
            task = self.loop.create_task(cycle.run_asgi(app))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    def on_response_complete(self) -> None:
        self.one_write.flush()  # an answer without a body: its head, before anything of the next request
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        elif self.refused is not None:
            self._send_refusal()
        else:  # keep-alive: the connection's timer closes it if nothing comes (see _too_slow)
            self.idle_since = now = self.loop.time()
            due = now + self.timeout_keep_alive
            if self.timer is not None and self.timer_at > due:
                self._disarm()
            if self.timer is None:
                self._arm(self.timeout_keep_alive)

    # --- the edge's own requests ---------------------------------------------------------------------------
    def direct(self) -> bool:
        """Whether this request goes straight to the edge. The layers skipped do nothing for it: Starlette's
        app only notes itself in the scope, its error handler answers 500 for an exception the edge's
        own handler has already answered (uvicorn's cycle still answers 500 for one that escapes), and the
        proxy headers are read only from a trusted proxy's X-Forwarded-* headers: such a request takes the
        long way. A path in absolute form (http://host/v1/...) takes it too."""
        return self.edge is not None and not self.forwarded and self.url.startswith(DIRECT)

    async def _answer(self, cycle_ref: weakref.ref[RequestResponseCycle], status: int,
                      headers: list[tuple[bytes, bytes]], body: bytes) -> None:  # fmt: skip
        """The whole answer, as uvicorn's cycle would send it in two messages (RequestResponseCycle.send):
        the same flow control, default headers, Connection handling, HEAD without a body, and completion.
        The headers are the edge's own (lower-case names, values it made), so uvicorn's per-header
        checks for a name or value that would break the head are not repeated here."""
        cycle = cycle_ref()  # alive: the request's task runs it (uvicorn's run_asgi)
        assert cycle is not None
        if cycle.flow.write_paused and not cycle.disconnected:
            await cycle.flow.drain()
        if cycle.disconnected:
            return
        if cycle.response_started:
            raise RuntimeError("an answer after the response started")
        cycle.response_started, cycle.waiting_for_100_continue = True, False
        if cycle.access_log:
            self.access_logger.info('%s - "%s %s HTTP/%s" %d', self.client and self.client[0], cycle.scope["method"],
                                    cycle.scope["path"], cycle.scope["http_version"], status)  # fmt: skip
        head, closing = [STATUS_LINE[status]], False
        for name, value in (*cycle.default_headers, *headers):
            if name == b"connection" and b"close" in value.lower():
                cycle.keep_alive, closing = False, True
            head += (name, b": ", value, b"\r\n")
        if not cycle.keep_alive and not closing:
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        if cycle.scope["method"] == "HEAD":
            body = b""
        if len(body) < SMALL_BODY:
            head.append(body)
            self.transport.write(b"".join(head))
        else:  # a large body is not copied: one vectored write
            self.transport.writelines((b"".join(head), body))
        cycle.response_complete = True
        cycle.message_event.set()
        if not cycle.keep_alive:
            self.one_write.close()
        cycle.on_response()

    def _too_large(self) -> Refused:
        return Refused(431, f"request headers over {self.limits.max_bytes} bytes (NNSERVE_MAX_HEADER_BYTES)")

    # --- answering a refusal, in turn ------------------------------------------------------------------
    def _refuse(self, refused: Refused) -> None:
        """Answers `refused` and closes, once the requests before it on this connection are answered."""
        self.refused, self.idle_since = refused, None
        self._disarm()
        self.flow.pause_reading()
        busy = self.cycle is not None and not self.cycle.response_complete
        if not busy and not self.pipeline:
            self._send_refusal()

    def _send_refusal(self) -> None:
        refused = self.refused
        assert refused is not None
        if refused.status >= 500 or refused.status == 408:
            log.info("%s: %s", self.client, refused.message)
        body = json.dumps({"error": refused.message, "detail": []}).encode()
        head = [STATUS_LINE[refused.status], b"content-type: application/json\r\n",
                b"content-length: %d\r\n" % len(body), b"connection: close\r\n\r\n"]  # fmt: skip
        self.transport.write(b"".join(head) + body)
        # A lingering close, as nginx and Apache make: closing with the client's bytes unread would reset
        # the connection, and the reset can destroy the answer on its way. So: no more writes, read and
        # drop what still comes (LINGER_BYTES at most), close when the client does or after LINGER_S.
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.flow.resume_reading()
        self.loop.call_later(LINGER_S, self.transport.close)


def install(limits: Limits) -> None:
    """Every uvicorn worker started after this (BentoML's, in this process) speaks HTTP/1.1 through
    GuardedHttpTools. Refuses to start on a uvicorn whose protocol is not the code this was written for."""
    found = {name: source_sha256(getattr(HttpToolsProtocol, name)) for name in SOURCES_SHA256}
    cycle = {name: source_sha256(getattr(RequestResponseCycle, name)) for name in CYCLE_SHA256}
    if uvicorn.__version__ != PATCHED_VERSION or found != SOURCES_SHA256 or cycle != CYCLE_SHA256:
        raise RuntimeError(
            f"service/glue/http_protocol.py extends uvicorn {PATCHED_VERSION}'s httptools protocol; found uvicorn "
            f"{uvicorn.__version__} with different code: check the subclass against it, then update the hashes"
        )
    GuardedHttpTools.limits = limits
    GuardedHttpTools.edge = None
    path = f"{__name__}:GuardedHttpTools"
    uvicorn.config.HTTP_PROTOCOLS.update({"auto": path, "httptools": path})


def answer_directly(edge: Any) -> None:
    """From now on, this process's HTTP connections hand the edge's own requests (/v1, /v2) to `edge`
    (an ASGI app): the app says so once no BentoML request layer stands above the edge."""
    GuardedHttpTools.edge = edge
