"""A real Prometheus (Debian's package) scrapes a running nnserve and evaluates our alerting rules
(deploy/prometheus/alerts.yml): a refused model version fires NNServeVersionRefused for that version
and no other alert fires; every query of the Grafana dashboard (deploy/grafana) is valid PromQL on
the live series, and the predictions panel shows the predictions just made."""

from __future__ import annotations

import json

import httpx

from loadtests.prometheus import DASHBOARD, poll, start_prometheus
from loadtests.serving import add_version, bentoml_serve
from tests.conftest import MODELS
from tests.integration.test_http import HOUSE


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
