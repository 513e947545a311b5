"""Optional API-key authentication for every route but the probes: off unless keys are configured.

Clients send `Authorization: Bearer <key>` or `X-API-Key: <key>`, exactly one of them, once: a
request carrying two credentials is refused (400, RFC 6750's invalid_request) rather than letting one
of them win. Keys come from NNSERVE_API_KEYS (comma-separated) and/or NNSERVE_API_KEYS_FILE (one per
line, # comments). A setting or file that is configured but holds no key (an empty mounted secret,
" , ") stops start-up: it must never quietly turn authentication off. Every configured key is
compared with `hmac.compare_digest`, all of them every time, so the answer's timing does not tell
which key, or how much of one, matched. Paths in NNSERVE_AUTH_EXEMPT_PATHS (the liveness, readiness
and metrics probes by default) stay open, because orchestrators and scrapers call them without keys.
"""

from __future__ import annotations

import hmac
from pathlib import Path

from service.errors import ConfigError

CHALLENGE = [(b"www-authenticate", b'Bearer realm="nnserve"')]
MISSING = "missing API key: send Authorization: Bearer <key> or X-API-Key: <key>"


def load_keys(inline: str, path: Path | None) -> list[bytes]:
    keys = [k.strip() for k in inline.split(",") if k.strip()]
    if inline and not keys:
        raise ConfigError(f"NNSERVE_API_KEYS={inline!r}: set, but holds no key: set keys, or unset it")
    if path is not None:
        try:
            lines = path.read_text().splitlines()
        except OSError as e:
            raise ConfigError(f"NNSERVE_API_KEYS_FILE={str(path)!r}: cannot read it ({e.strerror})") from None
        from_file = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not from_file:
            raise ConfigError(
                f"NNSERVE_API_KEYS_FILE={str(path)!r}: holds no key (only comments or blank lines): "
                "put one key per line, or unset it to turn authentication off"
            )
        keys += from_file
    return [k.encode() for k in keys]


def presented_keys(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    """Every credential the request carries: each Bearer Authorization header and each X-API-Key."""
    keys = []
    for name, value in headers:
        name = name.lower()
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            keys.append(value[7:].strip())
        elif name == b"x-api-key":
            keys.append(value.strip())
    return keys


class ApiKeyAuth:
    """Whether a request may pass: None, or the answer refusing it (status, message)."""

    def __init__(self, keys: list[bytes], exempt: frozenset[str]) -> None:
        self.keys = keys
        self.exempt = exempt

    def refusal(self, path: str, headers: list[tuple[bytes, bytes]]) -> tuple[int, str] | None:
        if not self.keys or path in self.exempt:
            return None
        presented = presented_keys(headers)
        if len(presented) > 1:
            return 400, "ambiguous credentials: send exactly one Authorization: Bearer <key> or X-API-Key: <key> header"
        if presented:
            matched = False
            for known in self.keys:  # no early exit: the same work whichever key matches
                matched |= hmac.compare_digest(presented[0], known)
            if matched:
                return None
        return 401, "invalid API key" if presented else MISSING
