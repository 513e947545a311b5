"""Property-based fuzzing of every operation in our OpenAPI document, with schemathesis, against the
real server: no 5xx, and every answer conforms to its documented status, content type and schema.

`make test` runs 25 examples per operation; `make fuzz` runs 300 (NNSERVE_FUZZ_EXAMPLES)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx

EXAMPLES = int(os.environ.get("NNSERVE_FUZZ_EXAMPLES", "25"))
CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"


def test_schemathesis_finds_no_server_error_and_no_schema_violation(server, tmp_path):
    schemathesis = Path(sys.executable).parent / "schemathesis"
    out = subprocess.run(
        [str(schemathesis), "run", f"{server}/docs.json", "--checks", CHECKS, "--max-examples", str(EXAMPLES),
         "--no-color", "--seed", "1"],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,  # its cache (.schemathesis/) stays out of the tree
    )  # fmt: skip
    summary = out.stdout[-3000:]
    assert out.returncode == 0, summary
    generated = int(re.search(r"(\d+) generated", out.stdout).group(1))  # type: ignore[union-attr]
    assert generated >= 15 * EXAMPLES // 3, summary  # every operation got its share of cases


def test_unknown_routes_and_methods_answer_json(server):
    for method, path, status in [
        ("GET", "/v1/nope", 404),
        ("GET", "/v2/nothing", 404),
        ("DELETE", "/v2/models/ad-click", 405),
    ]:
        r = httpx.request(method, server + path)
        assert r.status_code == status and r.headers["content-type"].startswith("application/json"), (path, r.text)
        assert r.json()["error"]
