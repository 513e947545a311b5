"""One real `bentoml serve` over the committed models for the whole integration session."""

from __future__ import annotations

import pytest

from tests.conftest import MODELS
from tests.serving import bentoml_serve

TEST_MAX_BODY = 4 * 1024 * 1024  # smaller than the default so the 413 test sends little


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """With the payload log on, so every integration test (and the fuzzer) also drives the payload log
    and the feedback route."""
    logs = tmp_path_factory.mktemp("payloads")
    with bentoml_serve(MODELS, NNSERVE_MAX_BODY_BYTES=str(TEST_MAX_BODY), NNSERVE_PAYLOAD_LOG_DIR=str(logs)) as url:
        yield url
