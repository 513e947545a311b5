"""The documents name only files that exist, and docs/development.md's map of the code is the tree's
(tests/layout.py generates it from the modules' docstrings)."""

from __future__ import annotations

import re

from tests import layout
from tests.conftest import REPO

PATH = re.compile(r"(?<![\w/.])((?:service|training|loadtests|tests|deploy|docs)/[\w./-]*\w\.(?:py|md|yml|toml))")
# loadtests/RESULTS.md is a record of past runs: it names files as they were then.
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "loadtests" / "GPU.md"]


def test_the_development_guide_maps_every_python_file():
    assert layout.current() is not None, "docs/development.md lost its generated layout section"
    assert layout.current() == layout.generated(), "the code changed: run `python -m tests.layout`"


def test_every_file_a_document_names_exists():
    missing = []
    for doc in DOCUMENTS:
        for path in set(PATH.findall(doc.read_text())):
            if not (REPO / path).exists():
                missing.append(f"{doc.name}: {path}")
    assert not missing, missing
