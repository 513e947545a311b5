"""A real Prometheus (Debian's package) scraping a running nnserve with our alerting rules loaded: for the
tests (tests/integration/test_prometheus.py, test_one_service.py) and the dashboard panels (dashboard.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import httpx

from loadtests.paths import REPO
from loadtests.ports import free_port

RULES = REPO / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "nnserve-dashboard.json"


def start_prometheus(target: str, tmp_path: Path) -> tuple[subprocess.Popen, str]:
    if shutil.which("prometheus") is None:
        raise RuntimeError("prometheus is needed (Debian's prometheus package; `make test` installs it)")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: [{json.dumps(str(RULES))}]\n"
        f"scrape_configs: [{{job_name: nnserve, static_configs: [{{targets: [{json.dumps(target)}]}}]}}]\n"
    )
    port = free_port()
    log = open(tmp_path / "prometheus.log", "w")  # noqa: SIM115 - the child process keeps writing to it
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    api = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            tail = (tmp_path / "prometheus.log").read_text()[-2000:]
            raise RuntimeError(f"prometheus exited ({proc.returncode}): {tail}")
        return httpx.get(api + "/-/ready").status_code == 200

    # Until its storage is open Prometheus answers its API with a plain-text 503 ("Service Unavailable"):
    # a query sent then reads no JSON. Seen when two test processes shared the cores; /-/ready says when.
    try:
        poll("Prometheus ready", ready)
    except BaseException:
        proc.kill()
        raise
    return proc, api


def poll(what: str, check, deadline_s: float = 60):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            found = check()
        except httpx.TransportError:
            found = None
        if found:
            return found
        time.sleep(0.5)  # polling with a deadline
    raise TimeoutError(what)
