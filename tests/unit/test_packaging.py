"""The package builds without setuptools' warnings, and carries its data (the docs page and the OpenAPI
base, the click-log schema presets): `pip install` of the project prints nothing of its own."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

from tests.conftest import REPO


def test_the_wheel_builds_quietly_and_carries_its_data(tmp_path):
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, tmp_path / name)
    for folder in ("service", "training"):  # a copy: the build writes build/ and *.egg-info beside the sources
        shutil.copytree(REPO / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    run = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", "-w", "dist", "."],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-2000:]
    assert "absent from the `packages` configuration" not in out and "BuildBackendWarning" not in out, out[-3000:]
    (wheel,) = (tmp_path / "dist").glob("nnserve-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    data = {"service/protocol/static/docs.html", "service/protocol/static/openapi.json", "training/schemas/avazu.toml"}
    assert data <= set(names)
