"""Every example in the README and in docs/ works as printed, against a real server."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from typing import Any

import pytest

from loadtests.ports import free_port
from loadtests.serving import stop
from tests.conftest import REPO

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCKS = [block for doc in DOCUMENTS for block in re.findall(r"```(\w+)\n(.*?)```", doc.read_text(), flags=re.S)]
CURL_EXAMPLES = [
    (command, expected)
    for (kind, command), (next_kind, expected) in zip(BLOCKS, BLOCKS[1:], strict=False)
    if kind == "sh" and "localhost:3000" in command and next_kind == "json"
]
PYTHON_EXAMPLES = [code for kind, code in BLOCKS if kind == "python" and "localhost:3000" in code]
GRPC_EXAMPLES = [
    (code, expected)
    for (kind, code), (next_kind, expected) in zip(BLOCKS, BLOCKS[1:], strict=False)
    if kind == "python" and "localhost:8001" in code and next_kind == "text"
]
ROLLOUT = [
    (command, expected)
    for (kind, command), (next_kind, expected) in zip(BLOCKS, BLOCKS[1:], strict=False)
    if kind == "sh" and "make serve" in command and "localhost:3000" in command and next_kind == "text"
]


def _same(got: Any, expected: Any) -> bool:
    """Equal, floats to 1e-4; an expected "<...>" stands for any text (a request id), "...(<time>)..." for
    any time stamp in its place."""
    if isinstance(expected, str) and "<" in expected and isinstance(got, str):
        pattern = re.escape(expected).replace(re.escape("<time>"), r"\d{4}-\d\d-\d\dT[\d:]+Z")
        return expected.startswith("<") and expected.endswith(">") or re.fullmatch(pattern, got) is not None
    if isinstance(expected, float) or isinstance(got, float):
        return got == pytest.approx(expected, rel=1e-4, abs=1e-7)
    if isinstance(expected, dict):
        return isinstance(got, dict) and got.keys() == expected.keys() and all(_same(got[k], expected[k]) for k in got)
    if isinstance(expected, list):
        return isinstance(got, list) and len(got) == len(expected) and all(map(_same, got, expected))
    return got == expected


def test_the_readme_has_an_example_for_every_endpoint():
    commands = "\n".join(c for c, _ in CURL_EXAMPLES)
    for route in ("housing-price/predict", "housing-price/predict-batch", "ad-click/predict", "ad-click/predict-batch",
                  "image-tagging/predict ", "image-tagging/predict-batch ", "image-tagging/predict-base64",
                  "image-tagging/predict-batch-base64", "/v1/models/", "/v1/health"):  # fmt: skip
        assert route in commands + " ", route
    assert PYTHON_EXAMPLES


@pytest.mark.parametrize(("command", "expected"), CURL_EXAMPLES, ids=[f"curl-{i}" for i in range(len(CURL_EXAMPLES))])
def test_curl_example_prints_what_the_readme_says(server, command, expected):
    host = server.removeprefix("http://")
    out = subprocess.run(
        ["bash", "-c", command.replace("localhost:3000", host)], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert _same(json.loads(out), json.loads(expected)), out


@pytest.mark.parametrize("code", PYTHON_EXAMPLES, ids=[f"python-{i}" for i in range(len(PYTHON_EXAMPLES))])
def test_python_example_runs(server, code):
    code = code.replace("localhost:3000", server.removeprefix("http://"))
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "cat" in out  # every Python example tags the cat photo; its other answers are checked by their tests


@pytest.mark.parametrize(("code", "expected"), GRPC_EXAMPLES, ids=[f"grpc-{i}" for i in range(len(GRPC_EXAMPLES))])
def test_grpc_example_prints_what_the_docs_say(server, grpc_port, code, expected):
    code = code.replace("localhost:8001", f"127.0.0.1:{grpc_port}")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == expected.strip().splitlines()


def test_there_is_a_grpc_example():
    assert GRPC_EXAMPLES


def _printed_line_matches(got: str, expected: str) -> bool:
    """A JSON line where `...,` stands for keys not shown; text where <time> is a run's time stamp."""
    if expected.startswith("{"):
        shown = json.loads(expected.replace(" ..., ", " "))
        answer = json.loads(got)
        return isinstance(answer, dict) and all(k in answer and _same(answer[k], v) for k, v in shown.items())
    pattern = re.escape(expected).replace(re.escape("<time>"), r"\d{8}-\d{6}")
    return re.fullmatch(pattern, got) is not None


@pytest.mark.parametrize(("command", "expected"), ROLLOUT, ids=[f"rollout-{i}" for i in range(len(ROLLOUT))])
def test_a_block_that_starts_its_own_server_runs_as_printed(tmp_path, command, expected):
    """The README's rollout, pasted into a shell as it is: `make serve &`, a model trained and published,
    the policy changed by calls; on a port and a demo folder of the test's own."""
    port, demo = free_port(), tmp_path / "nnserve-demo"
    script = command.replace("localhost:3000", f"127.0.0.1:{port}").replace("/tmp/nnserve-demo", str(demo))
    # gRPC on a port of its own too: the default (8001) may be held on a shared machine, and start-up stops then
    env = {**os.environ, "PORT": str(port), "NNSERVE_GRPC_PORT": str(free_port()),
           "BENTOML_HOME": str(tmp_path / "bentoml-home")}  # fmt: skip
    shell = subprocess.Popen(["bash", "-c", script], cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    try:
        out, err = shell.communicate(timeout=600)
    finally:
        stop(shell)  # the block's `make serve &` lives on in the shell's process group
    published = re.findall(r"published (build/models/\S+)", out)
    for folder in published:  # the trainer's run folder, in the checkout's (ignored) build/
        shutil.rmtree(REPO / folder, ignore_errors=True)
    got = out.splitlines()
    lines = expected.replace("/tmp/nnserve-demo", str(demo)).splitlines()
    log = demo / "serve.log"
    served = log.read_text()[-3000:] if log.exists() else "(no serve.log)"
    assert shell.returncode == 0 and len(got) == len(lines), (out, err[-2000:], served)
    for g, e in zip(got, lines, strict=True):
        assert _printed_line_matches(g, e), (g, e)
