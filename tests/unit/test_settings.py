"""Every setting, given a value it cannot take, stops start-up with one line naming the variable, the
value and what it takes (service/settings.py, service/app.py); no traceback."""

from __future__ import annotations

import pytest

from service.errors import ConfigError
from service.settings import PREFIX, Settings, load_settings
from service.worker import auth

# A value each setting cannot take. Settings that take any text have none: paths (a missing models
# directory, say, leaves the service up but not ready), and the comma-separated exempt paths.
BAD = {
    "models_dir": None, "version_policy": "newest", "policy_file": None, "model_poll_s": "-1",
    "models_dir_timeout_s": "0", "max_card_bytes": "1kb",
    "management": "maybe", "providers": "gpu", "device_id": "-1", "cuda_options": "{not json",
    "tensorrt_cache_dir": None, "provider_fallback": "cpu", "threads": "two", "tabular_batch_max": "-1",
    "dynamic_batch_max": "lots", "dynamic_batch_wait_ms": "-2", "workers": "-3", "max_body_bytes": "1000",
    "max_header_bytes": "512", "max_headers": "2", "header_timeout_s": "never", "fast_jpeg_decode": "faster",
    "max_image_pixels": "0", "max_batch_rows": "0", "max_batch_images": "1.5", "max_in_flight": "-1",
    "explain_background_rows": "1000", "explain_max_rows": "10", "explain_permutations": "1", "explain_max_batch": "0",
    "explain_grid": "64",
    "max_queue": "x", "request_timeout_s": "0", "shutdown_grace_s": "soon", "drift_window_rows": "-1",
    "drift_window_s": "an hour", "drift_psi_threshold": "0", "drift_min_rows": "0", "payload_log_dir": None,
    "payload_log_sample": "2", "payload_log_max_bytes": "1", "payload_log_max_files": "0",
    "payload_log_queue": "-1", "payload_log_dir_max_bytes": "1000",
    "feedback_ttl_s": "0", "feedback_keep_s": "-5", "feedback_window": "0",
    "access_log": "sometimes", "docs_ui": "on-ish", "log_format": "yaml", "api_keys": " , ",
    "api_keys_file": "/nonexistent/keys", "auth_exempt_paths": None, "grpc_port": "70000", "grpc_host": "",
}  # fmt: skip


def test_every_setting_is_covered():
    assert set(BAD) == set(Settings.model_fields), "a new setting: give it a bad value here (or None)"


@pytest.mark.parametrize("name", [n for n, v in BAD.items() if v is not None])
def test_a_bad_value_is_one_line_naming_the_variable(monkeypatch, name):
    variable, value = PREFIX + name.upper(), BAD[name]
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as refused:
        auth(load_settings())  # what service/app.py does at start-up
    message = str(refused.value)
    assert message.startswith(variable) and repr(value) in message and "\n" not in message, message


def test_the_messages_say_what_is_allowed(monkeypatch):
    monkeypatch.setenv("NNSERVE_LOG_FORMAT", "yaml")
    monkeypatch.setenv("NNSERVE_WORKERS", "-3")
    with pytest.raises(ConfigError) as refused:
        load_settings()
    message = str(refused.value)
    assert "NNSERVE_LOG_FORMAT='yaml': Input should be 'text' or 'json'" in message
    assert "NNSERVE_WORKERS='-3': Input should be greater than or equal to 0" in message
    monkeypatch.setenv("NNSERVE_LOG_FORMAT", "json")
    monkeypatch.setenv("NNSERVE_WORKERS", "2")
    monkeypatch.setenv("NNSERVE_VERSION_POLICY", "latest:0")
    with pytest.raises(ConfigError, match=r"NNSERVE_VERSION_POLICY='latest:0': expected latest, all or latest:N"):
        load_settings()


def test_the_operations_guide_lists_every_setting():
    from tests.conftest import REPO

    text = (REPO / "docs" / "operations.md").read_text()
    missing = [PREFIX + n.upper() for n in Settings.model_fields if f"| `{PREFIX}{n.upper()}` |" not in text]
    assert not missing, f"docs/operations.md's settings table lacks {missing}"
