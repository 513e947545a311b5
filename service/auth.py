"""Optional API-key authentication for every route but the probes: off unless keys are configured.

Clients send `Authorization: Bearer <key>` or `X-API-Key: <key>`. Keys come from NNSERVE_API_KEYS
(comma-separated) and/or NNSERVE_API_KEYS_FILE (one per line, # comments). Every configured key is
compared with `hmac.compare_digest`, all of them every time, so the answer's timing does not tell
which key, or how much of one, matched. Paths in NNSERVE_AUTH_EXEMPT_PATHS (the liveness, readiness
and metrics probes by default) stay open, because orchestrators and scrapers call them without keys.
"""

from __future__ import annotations

import hmac
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from service.middleware import send_json


def load_keys(inline: str, path: Path | None) -> list[bytes]:
    keys = [k.strip() for k in inline.split(",") if k.strip()]
    if path is not None:
        lines = path.read_text().splitlines()  # a missing file stops start-up: keys were asked for
        keys += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return [k.encode() for k in keys]


def presented_key(headers: dict[bytes, bytes]) -> bytes | None:
    auth = headers.get(b"authorization", b"")
    if auth[:7].lower() == b"bearer ":
        return auth[7:].strip()
    return headers.get(b"x-api-key")


class ApiKeyAuth:
    def __init__(self, app: ASGIApp, keys: list[bytes], exempt: frozenset[str]) -> None:
        self.app = app
        self.keys = keys
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.keys or scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        key = presented_key(dict(scope["headers"]))
        if key is not None:
            matched = False
            for known in self.keys:  # no early exit: the same work whichever key matches
                matched |= hmac.compare_digest(key, known)
            if matched:
                await self.app(scope, receive, send)
                return
        message = (
            "missing API key: send Authorization: Bearer <key> or X-API-Key: <key>"
            if key is None
            else "invalid API key"
        )
        challenge = {"headers": [(b"www-authenticate", b'Bearer realm="nnserve"')]}
        await send_json(send, 401, {"error": message, "detail": []}, challenge)
