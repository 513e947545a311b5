"""The short form of `make rollout`: 15 seconds of Locust across a swap, a rollback, a canary, a
refused broken version and a promotion, on a real two-worker server. No request may fail, and every
answer must come from version 1 or 2 (loadtests/rollout.py checks both and says so in its exit code)."""

from __future__ import annotations

import pytest

from loadtests.rollout import main

pytestmark = pytest.mark.alone  # Locust's load: no other test beside it (tests/conftest.py)


def test_a_rollout_under_locust_load_fails_no_request(capsys):
    assert main(["--seconds", "15"]) == 0
    printed = capsys.readouterr().out
    assert ", 0 failed, answered by versions ['1', '2']" in printed  # both versions answered under load
    assert printed.count("every worker within") == 6
