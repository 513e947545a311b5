"""The `nnserve` command against a real service that it started itself (`nnserve serve`): every command
run as a user types it, with its exit code and one-line errors; each command's --help says what the API's
own OpenAPI document says of the route it calls."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest
from PIL import Image

from loadtests.serving import add_version, free_port, stop, wait_until_up
from tests.conftest import MODELS, REPO

NNSERVE = str(Path(sys.executable).with_name("nnserve"))
PHOTO = REPO.parent / "shared" / "data" / "images" / "sample_photos" / "chelsea.png"
HOUSE = {"sqft_living": 1800, "bedrooms": 3, "zipcode": 98103}
KEY = "cli-key"


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    models = tmp_path_factory.mktemp("cli") / "models"
    add_version(models / "housing-price", MODELS / "housing-price", "1")
    add_version(models / "housing-price", MODELS / "housing-price", "2", scale=1.1)
    shutil.copytree(MODELS / "image-tagging", models / "image-tagging")
    port = free_port()
    home = Path(tempfile.mkdtemp(prefix="nnserve-cli-home-"))
    env = {"NNSERVE_MANAGEMENT": "true", "NNSERVE_API_KEYS": KEY, "NNSERVE_VERSION_POLICY": "all",
           "BENTOML_HOME": str(home), "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"}  # fmt: skip
    log = home / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen([NNSERVE, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
                                 "--grpc-port", str(free_port()),
                                 "--models-dir", str(models)], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    address = f"http://127.0.0.1:{port}"
    try:
        wait_until_up("nnserve serve", proc, address, lambda u: httpx.get(u + "/readyz").status_code == 200, 90, log)
        yield address
    finally:
        stop(proc)
        shutil.rmtree(home, ignore_errors=True)


def nnserve(url: str, *args: str, key: str | None = KEY, stdin: str = "") -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "NNSERVE_URL": url, **({"NNSERVE_API_KEY": key} if key else {})}
    return subprocess.run([NNSERVE, *args], env=env, input=stdin, capture_output=True, text=True, timeout=60)


def test_models_is_a_table_a_line_per_model(url):
    done = nnserve(url, "models")
    assert done.returncode == 0, done.stderr
    header, *lines = done.stdout.splitlines()
    assert header.split() == ["NAME", "VERSIONS", "DEFAULT", "TASK", "PROVIDER", "STATUS", "METRIC"]
    housing = next(line for line in lines if line.startswith("housing-price"))
    assert housing.split()[1:5] == ["2,1", "2", "regression", "CPU"] and "r2 0.87" in housing


def test_card_and_predict_from_an_argument_a_file_stdin_a_list_and_a_photo(url, tmp_path):
    card = json.loads(nnserve(url, "card", "housing-price").stdout)
    assert card["name"] == "housing-price" and card["serving"]["default"] == "2"
    one = json.loads(nnserve(url, "predict", "housing-price", json.dumps(HOUSE)).stdout)
    pinned = json.loads(nnserve(url, "predict", "housing-price", json.dumps(HOUSE), "--version", "1").stdout)
    assert one["version"] == "2" and pinned["version"] == "1" and one["price"] == pytest.approx(1.1 * pinned["price"])
    request = tmp_path / "house.json"
    request.write_text(json.dumps(HOUSE))
    assert json.loads(nnserve(url, "predict", "housing-price", f"@{request}").stdout)["price"] == one["price"]
    assert json.loads(nnserve(url, "predict", "housing-price", "-", stdin=json.dumps(HOUSE)).stdout) == one
    batch = json.loads(nnserve(url, "predict", "housing-price", json.dumps([HOUSE, HOUSE])).stdout)
    assert [p["price"] for p in batch["predictions"]] == [one["price"]] * 2
    photo = json.loads(nnserve(url, "predict", "image-tagging", "--photo", str(PHOTO)).stdout)
    assert photo["model"] == "image-tagging" and photo["tags"][0]["label"] == "cat"


def test_explain_a_row_and_a_photo(url, tmp_path):
    answer = json.loads(nnserve(url, "explain", "housing-price", json.dumps(HOUSE)).stdout)
    total = sum(answer["attributions"].values())
    assert (
        answer["unit"] == "USD"
        and abs(total - (answer["prediction"] - answer["baseline"])) < 1e-4 * answer["prediction"]
    )
    grid = json.loads(nnserve(url, "explain", "image-tagging", "--photo", str(PHOTO)).stdout)
    assert grid["label"] == "cat" and len(grid["grid"]) == 8
    png = tmp_path / "map.png"
    done = nnserve(url, "explain", "image-tagging", "--photo", str(PHOTO), "--png", str(png))
    assert done.returncode == 0, done.stderr
    assert Image.open(png).size == Image.open(PHOTO).size


def test_canary_promote_rollback_unload_and_load(url):
    canary = nnserve(url, "canary", "housing-price", "1", "25")
    assert canary.returncode == 0, canary.stderr
    assert json.loads(canary.stdout)["policy"]["canary"] == {"version": "1", "weight": 25.0}
    promoted = json.loads(nnserve(url, "promote", "housing-price", "1").stdout)
    assert promoted["policy"]["default"] == "1" and not promoted["policy"].get("canary")
    assert json.loads(nnserve(url, "predict", "housing-price", json.dumps(HOUSE)).stdout)["version"] == "1"
    back = json.loads(nnserve(url, "rollback", "housing-price", "2").stdout)
    assert back["policy"]["default"] == "2"
    shown = json.loads(nnserve(url, "policy", "housing-price").stdout)
    assert shown["serving"]["default"] == "2"
    assert nnserve(url, "unload", "image-tagging").returncode == 0
    assert "image-tagging" not in nnserve(url, "models").stdout
    assert nnserve(url, "load", "image-tagging").returncode == 0
    assert "image-tagging" in nnserve(url, "models").stdout


def test_mistakes_are_one_line_with_an_exit_code(url):
    for args, key, code, says in [
        (("models",), None, 1, "401"),  # the service wants a key
        (("predict", "housing-price", "{not json"), KEY, 2, "not JSON"),
        (("predict", "housing-price", json.dumps({"bedrooms": 3})), KEY, 1, "sqft_living"),
        (("canary", "housing-price", "9", "10"), KEY, 1, "canary"),
        (("card", "nope"), KEY, 1, "404"),
    ]:
        done = nnserve(url, *args, key=key)
        assert done.returncode == code and done.stderr.startswith("error:") and says in done.stderr, (args, done)
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    nowhere = nnserve(f"http://127.0.0.1:{free_port()}", "models")
    assert nowhere.returncode == 3 and "is the service running" in nowhere.stderr


def test_every_commands_help_is_the_apis_description_of_its_route(url):
    document = httpx.get(url + "/docs.json", headers={"X-API-Key": KEY}).json()["paths"]
    for command, (method, route) in {
        "models": ("get", "/v1/models"), "card": ("get", "/v1/models/{name}"),
        "load": ("post", "/v2/repository/models/{name}/load"),
        "unload": ("post", "/v2/repository/models/{name}/unload"),
        "policy": ("get", "/v1/models/{name}/policy"), "canary": ("put", "/v1/models/{name}/policy"),
        "promote": ("put", "/v1/models/{name}/policy"), "rollback": ("put", "/v1/models/{name}/policy"),
    }.items():  # fmt: skip
        shown = " ".join(nnserve(url, command, "--help").stdout.split())
        assert " ".join(document[route][method]["summary"].split()) in shown, command
        assert f"{method.upper()} {route}" in shown, command
