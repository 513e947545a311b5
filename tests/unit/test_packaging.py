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


def test_the_bento_carries_every_file_the_service_reads():
    """bentofile.yaml's include, matched as BentoML matches it (gitwildmatch): every tracked file of the
    service (code, the docs page and OpenAPI base) and of the committed models. A moved folder the include
    still named by its old path built a bento whose image exited at start (docs.html not found)."""
    import pathspec
    import yaml

    bentofile = yaml.safe_load((REPO / "bentofile.yaml").read_text())
    include = pathspec.PathSpec.from_lines("gitwildmatch", bentofile["include"])
    tracked = subprocess.run(
        ["git", "ls-files", "service", "models"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    # Not read by the service: the container's build scripts, the training curves (a picture for people)
    # and the committed policy.json ({}: no policies, the same as no file).
    unread = ("README.md", ".gitignore", "training_curves.png", "models/policy.json")
    served = [p for p in tracked if not p.startswith("service/container/") and not p.endswith(unread)]
    assert served and any(p.endswith("docs.html") for p in served)
    missed = [p for p in served if not include.match_file(p)]
    assert not missed, f"bentofile.yaml's include leaves out {missed}"
