"""API-key authentication: off by default, both header forms, probes exempt, 401 otherwise."""

from __future__ import annotations

import asyncio

import pytest

from service.auth import ApiKeyAuth, load_keys


async def _ok(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _status(middleware: ApiKeyAuth, path: str, headers: dict[str, str]) -> tuple[int, dict]:
    sent: list = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "path": path, "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    asyncio.run(middleware(scope, None, send))
    return sent[0]["status"], dict(sent[0]["headers"])


AUTH = ApiKeyAuth(_ok, [b"alpha", b"beta-key"], frozenset({"/livez", "/metrics"}))


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer alpha"}, 200),
        ({"authorization": "bearer beta-key"}, 200),
        ({"X-API-Key": "beta-key"}, 200),
        ({"Authorization": "Bearer alph"}, 401),
        ({"Authorization": "Basic YWxwaGE="}, 401),
        ({"X-API-Key": ""}, 401),
    ],
)
def test_keys(headers, status):
    got, response_headers = _status(AUTH, "/v1/housing-price/predict", headers)
    assert got == status
    if status == 401:
        assert response_headers[b"www-authenticate"].startswith(b"Bearer")


def test_probes_are_exempt_and_no_keys_means_no_authentication():
    assert _status(AUTH, "/livez", {})[0] == 200 and _status(AUTH, "/metrics", {})[0] == 200
    assert _status(AUTH, "/v2/health/ready", {})[0] == 401  # not in this instance's exempt list
    assert _status(ApiKeyAuth(_ok, [], frozenset()), "/v1/housing-price/predict", {})[0] == 200


def test_keys_from_the_setting_and_a_file(tmp_path):
    path = tmp_path / "keys"
    path.write_text("# production keys\nfile-key\n\n  other  \n")
    assert load_keys(" a, b ,,", path) == [b"a", b"b", b"file-key", b"other"]
    with pytest.raises(FileNotFoundError):
        load_keys("", tmp_path / "missing")
