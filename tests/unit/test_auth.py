"""API-key authentication: off by default, both header forms, probes exempt, 401 otherwise, 400 for
two credentials; keys configured but empty refuse to start."""

from __future__ import annotations

import pytest

from service.errors import ConfigError
from service.protocol.auth import ApiKeyAuth, load_keys


def _status(auth: ApiKeyAuth, path: str, headers: dict[str, str] | list[tuple[str, str]]) -> int:
    pairs = headers.items() if isinstance(headers, dict) else headers
    refused = auth.refusal(path, [(k.lower().encode(), v.encode()) for k, v in pairs])
    return 200 if refused is None else refused[0]


AUTH = ApiKeyAuth([b"alpha", b"beta-key"], frozenset({"/livez", "/metrics"}))


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
    assert _status(AUTH, "/v1/housing-price/predict", headers) == status


def test_probes_are_exempt_and_no_keys_means_no_authentication():
    assert _status(AUTH, "/livez", {}) == 200 and _status(AUTH, "/metrics", {}) == 200
    assert _status(AUTH, "/v2/health/ready", {}) == 401  # not in this instance's exempt list
    assert _status(ApiKeyAuth([], frozenset()), "/v1/housing-price/predict", {}) == 200


def test_keys_from_the_setting_and_a_file(tmp_path):
    path = tmp_path / "keys"
    path.write_text("# production keys\nfile-key\n\n  other  \n")
    assert load_keys(" a, b ,,", path) == [b"a", b"b", b"file-key", b"other"]
    with pytest.raises(ConfigError, match="missing.: cannot read it"):
        load_keys("", tmp_path / "missing")


@pytest.mark.parametrize("inline", [" , ", ",", "  "])
def test_a_key_setting_with_no_key_in_it_refuses_to_start(inline):
    with pytest.raises(ConfigError, match="NNSERVE_API_KEYS=.*: set, but holds no key"):
        load_keys(inline, None)


@pytest.mark.parametrize("text", ["", "\n\n", "# rotated out\n  # old-key\n\n"])
def test_a_keys_file_with_no_key_in_it_refuses_to_start(tmp_path, text):
    path = tmp_path / "keys"
    path.write_text(text)
    with pytest.raises(ConfigError, match="holds no key"):
        load_keys("", path)
    with pytest.raises(ConfigError, match="holds no key"):
        load_keys("inline-key", path)  # configured: an empty mounted secret is a mistake, even beside other keys


@pytest.mark.parametrize(
    "headers",
    [
        [("Authorization", "Bearer alpha"), ("Authorization", "Bearer wrong")],
        [("Authorization", "Bearer wrong"), ("Authorization", "Bearer alpha")],
        [("X-API-Key", "wrong"), ("X-API-Key", "alpha")],
        [("X-API-Key", "alpha"), ("X-API-Key", "alpha")],
        [("Authorization", "Bearer beta-key"), ("X-API-Key", "alpha")],
    ],
)
def test_two_credentials_are_refused_whichever_comes_last(headers):
    assert _status(AUTH, "/v1/housing-price/predict", headers) == 400
