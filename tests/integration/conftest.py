"""One real `bentoml serve` over the committed models for the whole integration session."""

from __future__ import annotations

import pytest

from loadtests.ports import free_port
from loadtests.serving import bentoml_serve
from tests.conftest import MODELS

TEST_MAX_BODY = 4 * 1024 * 1024  # smaller than the default so the 413 test sends little


@pytest.fixture(scope="session")
def grpc_port() -> int:
    """The session server's gRPC port (tests/integration/test_grpc.py)."""
    return free_port()


@pytest.fixture(scope="session")
def server(tmp_path_factory, grpc_port):
    """With the payload log on, so every integration test (and the fuzzer) also drives the payload log
    and the feedback route. The tests' traffic (one house, over and over) is drift by any measure: its
    warnings would change /v1/health's answer that the docs show, so this server never calls anything
    drifted (tests/integration/test_drift.py checks that on real sales)."""
    logs = tmp_path_factory.mktemp("payloads")
    env = {"NNSERVE_MAX_BODY_BYTES": str(TEST_MAX_BODY), "NNSERVE_PAYLOAD_LOG_DIR": str(logs),
           "NNSERVE_DRIFT_PSI_THRESHOLD": "1e9", "NNSERVE_GRPC_PORT": str(grpc_port)}  # fmt: skip
    with bentoml_serve(MODELS, **env) as url:
        yield url
