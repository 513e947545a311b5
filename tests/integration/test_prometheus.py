"""A real Prometheus (Debian's package) scrapes a running nnserve and evaluates our alerting rules
(deploy/prometheus/alerts.yml): a refused model version fires NNServeVersionRefused for that version
and no other alert fires; every query of the Grafana dashboard (deploy/grafana) is valid PromQL on
the live series, and the predictions panel shows the predictions just made."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import MODELS, REPO
from tests.integration.test_http import HOUSE
from tests.serving import add_version, bentoml_serve, free_port

RULES = REPO / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "nnserve-dashboard.json"


def start_prometheus(target: str, tmp_path: Path) -> tuple[subprocess.Popen, str]:
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus is needed (Debian's prometheus package; `make test` installs it)")
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
    return proc, f"http://127.0.0.1:{port}"


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


def test_prometheus_scrapes_nnserve_fires_the_refused_version_alert_and_runs_every_dashboard_query(tmp_path):
    models = tmp_path / "models"
    add_version(models / "housing-price", MODELS / "housing-price", "1")
    add_version(models / "housing-price", MODELS / "housing-price", "2", breakage="sha")  # refused
    with bentoml_serve(models, NNSERVE_WORKERS="1") as url:
        # One prediction first: a counter's series starts with it, and a rate needs a sample before the rise.
        assert httpx.post(url + "/v1/housing-price/predict", json=HOUSE, timeout=10).status_code == 200
        proc, prometheus = start_prometheus(url.removeprefix("http://"), tmp_path)
        try:
            api = prometheus + "/api/v1"

            def firing():
                answer = httpx.get(api + "/alerts", timeout=5)
                if answer.status_code != 200:  # 503 while Prometheus starts
                    return None
                alerts = answer.json()["data"]["alerts"]
                return [a for a in alerts if a["state"] == "firing"]

            alerts = poll("NNServeVersionRefused firing", firing)
            assert [(a["labels"]["alertname"], a["labels"]["model"], a["labels"]["version"]) for a in alerts] == [
                ("NNServeVersionRefused", "housing-price", "2")
            ]
            panels = json.loads(DASHBOARD.read_text())["panels"]
            for panel in panels:
                for target in panel["targets"]:
                    query = target["expr"].replace("$model", ".*")
                    answer = httpx.get(api + "/query", params={"query": query}, timeout=5).json()
                    assert answer["status"] == "success", (panel["title"], answer)
            for _ in range(20):  # after the first scrapes: the rate sees them arrive
                assert httpx.post(url + "/v1/housing-price/predict", json=HOUSE, timeout=10).status_code == 200
            rate = panels[0]["targets"][0]["expr"].replace("$model", ".*").replace("[1m]", "[1h]")

            def predictions():
                result = httpx.get(api + "/query", params={"query": rate}, timeout=5).json()["data"]["result"]
                return [r["metric"] for r in result if float(r["value"][1]) > 0]

            assert {"model": "housing-price", "version": "1", "status": "200"} in poll("the predictions", predictions)

            def drift():  # the drift window's gauges, scraped: the 20 houses above are in it
                query = 'nnserve_drift_window_rows{model="housing-price"} > 0'
                return httpx.get(api + "/query", params={"query": query}, timeout=5).json()["data"]["result"] or None

            assert poll("the drift gauges", drift)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
