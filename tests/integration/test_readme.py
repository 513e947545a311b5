"""Every example in the README and in docs/ works as printed, against a real server."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import REPO

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCKS = [block for doc in DOCUMENTS for block in re.findall(r"```(\w+)\n(.*?)```", doc.read_text(), flags=re.S)]
CURL_EXAMPLES = [
    (command, expected)
    for (kind, command), (next_kind, expected) in zip(BLOCKS, BLOCKS[1:], strict=False)
    if kind == "sh" and "localhost:3000" in command and next_kind == "json"
]
PYTHON_EXAMPLES = [code for kind, code in BLOCKS if kind == "python" and "localhost:3000" in code]


def _same(got: Any, expected: Any) -> bool:
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
