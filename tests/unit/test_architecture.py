"""The architecture holds (import-linter's contracts in pyproject.toml: the layers of service/, no torch
or training on the serving path, no import circle anywhere, tests/ above loadtests/), and a copy that
breaks each contract is caught."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

LINT = Path(sys.executable).parent / "lint-imports"


def lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=300)


def test_the_contracts_hold():
    run = lint(REPO)
    assert run.returncode == 0, run.stdout[-3000:]
    assert "Contracts: 4 kept, 0 broken." in run.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("service/tasks/base.py", "import service.protocol.transport", "service/ in layers"),
        ("service/runtime.py", "import service.models.registry", "service/ in layers"),
        ("service/dataplane/drift.py", "import training.distributions", "imports neither training nor torch"),
        ("training/distributions.py", "import training.reference", "no import circles"),
        ("loadtests/payloads.py", "import tests.conftest", "tests/ may import loadtests/"),
    ],
    ids=[
        "a task imports the protocol",
        "runtime imports the registry",
        "service imports training",
        "a circle in training",
        "loadtests imports tests",
    ],  # fmt: skip
)
def test_a_copy_that_breaks_a_contract_is_caught(tmp_path, module, line, broken):
    for name in ("service", "training", "tests", "loadtests"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "*.onnx"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    path = tmp_path / module
    path.write_text(path.read_text() + f"\n{line}  # the breakage\n")
    run = lint(tmp_path)
    assert run.returncode != 0 and f"{broken}" in run.stdout and "BROKEN" in run.stdout, run.stdout[-2000:]
