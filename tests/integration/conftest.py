"""One real `bentoml serve` over the committed models for the whole integration session."""

from __future__ import annotations

import pytest

from tests.conftest import MODELS
from tests.serving import bentoml_serve

TEST_MAX_BODY = 4 * 1024 * 1024  # smaller than the default so the 413 test sends little


@pytest.fixture(scope="session")
def server():
    with bentoml_serve(MODELS, NNSERVE_MAX_BODY_BYTES=str(TEST_MAX_BODY)) as url:
        yield url
