"""What the protocol layer knows of one request: made at the edge, passed to its handler explicitly.

No nnserve state travels in the ASGI scope: a handler takes the context, the route's parameters and
the ASGI receive and send; what it tells the edge (the model and version that answered, the answer's
status and headers) it writes here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

REQUEST_KEY = b"x-request-key"  # a client's key: the canary draw is the same for the same key


@dataclass(slots=True)
class Context:
    request_id: int
    method: str
    path: str
    headers: list[tuple[bytes, bytes]]
    start: float  # time.perf_counter() when the edge took the request
    route: str = "(unmatched)"  # the matched route, as the request metrics label it
    prediction: bool = False  # admitted, counted in flight, and measured per version
    model: str | None = None  # the model and version that answered (a prediction's metrics)
    version: str = ""
    status: int = 0  # of the answer, once sent
    answer_headers: list[tuple[bytes, bytes]] = field(default_factory=list)  # content type and length, for the log
    series: Any = None  # the request series it is counted in (service/protocol/http_metrics.py)
    query: bytes = b""  # the query string, as the ASGI scope has it
    grpc_status: str = ""  # a gRPC call's code (its `status` is the HTTP status the same answer would have)
    answer: Any = None  # the server's whole-answer call (the scope's "nnserve.answer" extension), where offered

    hex_id: str = ""  # request_hex, once asked for
    by_name: dict[bytes, bytes] | None = None  # the headers by lower-case name (the first of each), once asked for

    @property
    def request_hex(self) -> str:
        """The id as it is shown: on the answer, in the log lines and the payload log."""
        if not self.hex_id:
            self.hex_id = format(self.request_id, "016x")
        return self.hex_id

    def header(self, name: bytes) -> str:
        """The first value of the header `name` (lower case), "" without one. A request asks for four or five:
        the headers are looked through once."""
        by_name = self.by_name
        if by_name is None:
            by_name = self.by_name = {key.lower(): value for key, value in reversed(self.headers)}
        value = by_name.get(name)
        return "" if value is None else value.decode("latin-1")

    def answered_by(self, model: str, version: str) -> None:
        self.model, self.version = model, version
