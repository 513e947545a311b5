"""What comes before a request is bounded (service/glue/http_protocol.py), over real sockets against a real
`bentoml serve`: header bytes, header count, the time headers take, transfer codings, and a malformed
request pipelined after a valid one."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from loadtests.serving import bentoml_serve
from tests.conftest import MODELS

LIMITS = {"NNSERVE_MAX_HEADER_BYTES": "8192", "NNSERVE_MAX_HEADERS": "30", "NNSERVE_HEADER_TIMEOUT_S": "1"}
HOUSE = b'{"sqft_living": 1800, "bedrooms": 3, "zipcode": 98103}'


@pytest.fixture(scope="module")
def url():
    with bentoml_serve(MODELS, **LIMITS) as url:
        yield url


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=15)


def _read_all(conn: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := conn.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _post(path: str = "/v1/housing-price/predict", body: bytes = HOUSE, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body  # fmt: skip


def _status_and_error(answer: bytes) -> tuple[int, str]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)["error"]


@pytest.mark.parametrize(
    ("extra", "status", "words"),
    [
        ("X-Big: " + "a" * 100_000 + "\r\n", 431, "NNSERVE_MAX_HEADER_BYTES"),  # one header line, never held whole
        ("".join(f"X-H{i}: v\r\n" for i in range(200)), 431, "NNSERVE_MAX_HEADERS"),
        ("TE", 501, "Transfer-Encoding"),
    ],
    ids=["huge-header", "too-many-headers", "gzip-chunked"],
)
def test_headers_past_the_limits_are_refused_and_the_connection_closed(url, extra, status, words):
    if extra == "TE":  # a chunked body, gzip'd: the gzip would be ignored by a parser that takes the last coding
        request = (b"POST /v1/housing-price/predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                   b"Transfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")  # fmt: skip
    else:
        request = _post(extra=extra)
    with _connect(url) as conn:
        conn.sendall(request)
        answer = _read_all(conn)  # the server closes: the read ends
    got, error = _status_and_error(answer)
    assert got == status and words in error, answer[:300]
    assert httpx.get(url + "/readyz").status_code == 200


def test_headers_that_do_not_arrive_in_time_get_408_and_silent_connections_are_closed(url):
    idle = [_connect(url) for _ in range(20)]  # connections that never send a byte
    with _connect(url) as slow:
        slow.sendall(b"POST /v1/housing-price/predict HTTP/1.1\r\nHost: t\r\n")  # and no more
        answer = _read_all(slow)
    assert _status_and_error(answer) == (408, "request headers not complete within 1 s (NNSERVE_HEADER_TIMEOUT_S)")
    for conn in idle:
        with conn:
            assert _read_all(conn) == b""  # closed by the server, without an answer
    with _connect(url) as ok:  # a request in time is served as ever, and its connection kept
        ok.sendall(_post())
        assert ok.recv(65536).startswith(b"HTTP/1.1 200")


def test_a_malformed_request_pipelined_after_a_valid_one_is_answered_after_it(url):
    with _connect(url) as conn:
        conn.sendall(_post() + b"GARBAGE / HTTP/9.9\r\n\r\n")
        answer = _read_all(conn)
    first, _, rest = answer.partition(b"HTTP/1.1 400")
    assert first.startswith(b"HTTP/1.1 200") and b'"price"' in first, answer[:500]
    assert rest and b"invalid HTTP request" in rest


def test_headers_within_the_limits_are_served(url):
    headers = {f"x-h{i}": "v" * 200 for i in range(20)}  # 20 headers, ~4.5 KB
    r = httpx.post(url + "/v1/housing-price/predict", content=HOUSE, headers=headers)
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and httpx.get(url + "/readyz").status_code != 200:
        time.sleep(0.1)  # polling, with a deadline
