"""Code of a library that nnserve patches or reproduces, pinned: the hash of a function's source, checked at
start-up against the hash recorded when nnserve's code was written against it (service/glue/patches.py,
service/glue/http_protocol.py, service/tally.py). A library upgraded under it is refused or bypassed, never
silently trusted."""

from __future__ import annotations

import hashlib
import inspect
from typing import Any


def source_sha256(function: Any) -> str:
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()
