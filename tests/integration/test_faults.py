"""Overload and faults against a real `bentoml serve`: admission control, the request timeout, a killed
worker, graceful shutdown. Each test starts its own one-worker server, so that its settings and its
process are its own."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from loadtests.serving import bentoml_serve, metrics_containing, server_log, server_processes, worker_pids
from tests.conftest import MODELS, SAMPLE_PHOTOS

HOUSE = {"sqft_living": 1000, "bedrooms": 2, "zipcode": 98103}


def start_slow_request(url: str, body: bytes, sent: int, route: str = "/v1/housing-price/predict") -> socket.socket:
    """A prediction request whose client has sent the headers and `sent` bytes of the body, and waits:
    to the server, a request in flight for as long as the test likes."""
    port = int(url.rsplit(":", 1)[1])
    conn = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = f"POST {route} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n".encode()
    conn.sendall(head + b"Content-Length: %d\r\n\r\n" % len(body) + body[:sent])
    return conn


def read_answer(conn: socket.socket) -> tuple[int, dict]:
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    return int(head.split()[1]), json.loads(body)


def _length(data: bytes) -> int:
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower()
    return next(int(line.split(":")[1]) for line in head.split("\r\n") if line.startswith("content-length:"))


def test_overload_answers_503_with_retry_after_and_recovers():
    photos = [("photos", (f"{i}.png", (SAMPLE_PHOTOS / "chelsea.png").read_bytes())) for i in range(8)]
    env = {"NNSERVE_WORKERS": "1", "NNSERVE_MAX_IN_FLIGHT": "1", "NNSERVE_MAX_QUEUE": "0"}
    with bentoml_serve(MODELS, **env) as url:

        def tag(_):
            r = httpx.post(url + "/v1/image-tagging/predict-batch", files=photos, timeout=60)
            return r.status_code, r.headers.get("retry-after"), r.json()

        with ThreadPoolExecutor(24) as pool:
            answers = list(pool.map(tag, range(48)))
            assert httpx.get(url + "/livez").status_code == 200  # probes are not limited
        statuses = {status for status, _, _ in answers}
        assert statuses <= {200, 503} and 200 in statuses and 503 in statuses, statuses
        refused = next(a for a in answers if a[0] == 503)
        assert refused[1] == "1" and "overloaded" in refused[2]["error"]
        assert tag(None)[0] == 200  # load gone: served again


def test_a_killed_worker_is_replaced_and_readiness_shows_the_gap():
    house = {"sqft_living": 1000, "bedrooms": 2, "zipcode": 98103}
    with bentoml_serve(MODELS, NNSERVE_WORKERS="1") as url:
        (old,) = worker_pids(url)
        os.kill(old, signal.SIGKILL)
        ready_during_gap = []
        end = time.monotonic() + 60
        while time.monotonic() < end:  # poll, with a deadline, until a new worker answers
            try:
                ready_during_gap.append(httpx.get(url + "/readyz", timeout=1).status_code == 200)
            except httpx.TransportError:
                ready_during_gap.append(False)
            if ready_during_gap[-1]:
                break
        assert ready_during_gap[-1], "no worker came back"
        assert not ready_during_gap[0]  # right after the kill, /readyz does not say ready
        (new,) = worker_pids(url)
        assert new != old
        assert httpx.post(url + "/v1/housing-price/predict", json=house).status_code == 200


def test_a_request_over_the_timeout_gets_504_and_frees_its_slot():
    body = json.dumps(HOUSE).encode()
    env = {"NNSERVE_WORKERS": "1", "NNSERVE_REQUEST_TIMEOUT_S": "1", "NNSERVE_MAX_IN_FLIGHT": "1"}
    with bentoml_serve(MODELS, NNSERVE_MAX_QUEUE="0", **env) as url:
        slow = start_slow_request(url, body, sent=10)  # takes the worker's only slot, never finishes
        held = httpx.post(url + "/v1/housing-price/predict", json=HOUSE)
        assert held.status_code == 503  # the slot is taken...
        status, answer = read_answer(slow)
        assert status == 504 and "within 1 s" in answer["error"] and answer["detail"] == []
        # ...and the timeout gave it back: the next request is served.
        assert httpx.post(url + "/v1/housing-price/predict", json=HOUSE).status_code == 200


def test_sigterm_drains_refuses_new_work_finishes_in_flight_and_exits():
    body = json.dumps(HOUSE).encode()
    with bentoml_serve(MODELS, NNSERVE_WORKERS="1", NNSERVE_SHUTDOWN_GRACE_S="20") as url:
        in_flight = [start_slow_request(url, body, sent=10) for _ in range(3)]
        three = (
            'bentoml_service_request_in_progress{endpoint="/v1/housing-price/predict",runner_name="nnserve",'
            'service_name="nnserve",'
            'service_version="not available"} 3.0'
        )
        assert three in metrics_containing(url, three)  # the worker has them
        assert "\nnnserve_in_flight 3.0" in metrics_containing(url, "\nnnserve_in_flight 3.0")  # the autoscaler's
        main = server_processes(url)[0]
        main.send_signal(signal.SIGTERM)  # what Kubernetes or `docker stop` sends
        ready = httpx.get(url + "/readyz", timeout=5)
        assert ready.status_code == 503 and "shutting down" in ready.json()["error"]
        assert httpx.get(url + "/v1/health", timeout=5).json()["draining"] is True
        assert httpx.get(url + "/livez", timeout=5).status_code == 200  # alive: it is finishing work
        refused = httpx.post(url + "/v1/housing-price/predict", json=HOUSE, timeout=5)
        assert refused.status_code == 503 and "shutting down" in refused.json()["error"]
        assert refused.headers["retry-after"] == "1" and refused.headers["connection"] == "close"
        assert main.is_running()  # still waiting for the three requests in flight
        for conn in in_flight:
            conn.sendall(body[10:])
            status, answer = read_answer(conn)
            assert status == 200 and answer["price"] > 0
        main.wait(timeout=25)  # the grace period, and a margin: it exits once drained
        log = server_log(url).read_text()
        assert "3 in flight" in log and "drained: no prediction in flight" in log
        assert "grace period" not in log  # it exited because it drained, not because the grace period ran out


def _in_flight(url: str, n: int) -> None:
    needle = (
        f'bentoml_service_request_in_progress{{endpoint="/v1/housing-price/predict",runner_name="nnserve",'
        f'service_name="nnserve",service_version="not available"}} {n}.0'
    )
    assert needle in metrics_containing(url, needle)


def test_an_upload_that_starts_during_the_drain_gets_the_503_not_a_reset():
    body = json.dumps(HOUSE).encode()
    with bentoml_serve(MODELS, NNSERVE_WORKERS="1", NNSERVE_SHUTDOWN_GRACE_S="20") as url:
        holding = start_slow_request(url, body, sent=10)  # keeps the worker draining
        _in_flight(url, 1)
        server_processes(url)[0].send_signal(signal.SIGTERM)
        while httpx.get(url + "/readyz", timeout=5).status_code == 200:
            time.sleep(0.05)  # polling until the drain has begun, with the request's own deadline
        upload = json.dumps({"image_base64": "A" * 15_000_000}).encode()  # an upload that starts now
        refused = start_slow_request(url, upload, sent=1_000_000, route="/v1/image-tagging/predict-base64")
        refused.sendall(upload[1_000_000:])  # the rest of it, after the server has seen it begin
        status, answer = read_answer(refused)  # before the fix: ConnectionResetError, here or in sendall
        assert status == 503 and "shutting down" in answer["error"]
        holding.sendall(body[10:])
        assert read_answer(holding)[0] == 200


def test_the_grace_period_holds_even_for_a_request_that_never_finishes():
    body = json.dumps(HOUSE).encode()
    with bentoml_serve(MODELS, NNSERVE_WORKERS="1", NNSERVE_SHUTDOWN_GRACE_S="1") as url:
        stuck = start_slow_request(url, body, sent=10)  # its client never sends the rest
        _in_flight(url, 1)
        main = server_processes(url)[0]
        main.send_signal(signal.SIGTERM)
        main.wait(timeout=25)  # a deadline, not a measurement: without the fix it waits for the client
        log = server_log(url).read_text()
        assert "grace period of 1 s over with 1 predictions in flight: exiting" in log
        assert "Service instance cleanup finalized" not in log.split("grace period of 1 s over")[0]
        stuck.settimeout(5)
        with contextlib.suppress(ConnectionResetError):  # closed by the server, unanswered
            assert stuck.recv(65536) == b""
