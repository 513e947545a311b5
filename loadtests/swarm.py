"""`make swarm-test`: nnserve rehearsed live on Docker Swarm (deploy/swarm/stack.yml), under Locust load.

    python -m loadtests.swarm --image nnserve:0.1.0 [--record]

Three replicas (one worker each) behind the HAProxy front proxy, published in host mode and open to this
host only (PROXY_ALLOW); all load goes to 127.0.0.1. Locust runs loadtests/locustfile.py (every endpoint,
every answer checked) and, for a fifth of the users by weight, loadtests/locust_grpc.py (ModelInfer over
gRPC through the proxy's gRPC port, every answer checked) through each scenario:

(a) rolling update to a new image (a copy of --image with one more label: a new image id), start-first,
    health-gated: no request may fail, the update must end completed (not paused, not rolled back: then
    Swarm's message and each task's state and error are printed), and every replica must be on the new image;
(b) one replica SIGKILLed: the failures are counted and stated (the proxy retries predictions on another
    replica, so there should be none: any fails the run), and Swarm must replace the replica;
(c) scale 1 -> 3 -> 1: no request may fail; while three run, each replica's own /metrics
    (nnserve_predictions_total, read inside its container) shows its share of the load.

It creates a swarm when this engine is in none (and leaves it at the end), the stack, the proxy image and
the new image, and removes all of them when it ends, passed or not. Exit 1 when a scenario fails.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import httpx

from loadtests.bench import RESULTS, machine
from loadtests.run import LOCUSTFILE, locust, read_stats
from loadtests.serving import REPO, free_port
from service.protocol.rpc.proto import grpc_service_pb2 as pb
from service.protocol.rpc.proto import grpc_service_pb2_grpc as pb_grpc

GRPC_LOCUSTFILE = REPO / "loadtests" / "locust_grpc.py"
STACK = "nnserve-rehearsal"
SERVICE = f"{STACK}_nnserve"
USERS = 8
ENDED = {"completed", "paused", "rollback_completed", "rollback_paused"}  # an update's end (UpdateStatus.State)
METRICS = (
    "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:3000/metrics', timeout=10).read().decode())"
)


def docker(*args: str, timeout: float = 300) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip()


def wait_for(what: str, check: Callable[[], bool], deadline_s: float = 180) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > deadline_s:
            raise TimeoutError(f"{what}: not within {deadline_s:.0f} s")
        time.sleep(0.5)
    return time.monotonic() - start


# --- the replicas, as Docker sees them -----------------------------------------------------------------
def containers(health: str = "") -> list[str]:
    """The running containers of the nnserve service (only the healthy ones, with health="healthy")."""
    filters = ["--filter", f"label=com.docker.swarm.service.name={SERVICE}", "--filter", "status=running"]
    if health:
        filters += ["--filter", f"health={health}"]
    return docker("ps", "-q", "--no-trunc", *filters).split()


def settled(replicas: int) -> Callable[[], bool]:
    """Exactly `replicas` containers running, all healthy: none starting, none draining."""
    return lambda: len(containers()) == replicas == len(containers("healthy"))


def image_of(container: str) -> str:
    return docker("inspect", "-f", "{{.Config.Image}}", container)


def proxy_retries() -> int:
    """Requests the proxy sent again (to the same replica or, redispatched, to another), from its stats."""
    (proxy,) = docker("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={STACK}_proxy").split()
    read = "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8404/stats;csv').read().decode())"
    rows = list(csv.DictReader(docker("exec", proxy, "python3", "-c", read).lstrip("# ").splitlines()))
    backend = next(r for r in rows if r["pxname"] == "nnserve" and r["svname"] == "BACKEND")
    return int(backend["wretr"] or 0) + int(backend["wredis"] or 0)


def predictions(container: str) -> float:
    """The predictions one replica answered, from its own /metrics (read inside the container)."""
    text = docker("exec", container, "python", "-c", METRICS, timeout=30)
    return sum(float(v) for v in re.findall(r"^nnserve_predictions_total\{[^}]*\} (\S+)$", text, re.M))


# --- what the rehearsal creates, and removes ---------------------------------------------------------
@contextmanager
def rehearsal(image: str, port: int, grpc_port: int) -> Iterator[str]:
    """The stack deployed and ready (HTTP and gRPC through the proxy), its proxy's URL yielded; everything
    created here removed after."""
    version = image.rsplit(":", 1)[-1]
    proxy_image, new_image = f"nnserve-proxy:{version}-rehearsal", new_image_of(image)
    made_swarm = docker("info", "-f", "{{.Swarm.LocalNodeState}}") == "inactive"
    had_gateway = "docker_gwbridge" in docker("network", "ls", "--format", "{{.Name}}").split()  # swarm makes it
    made_images: list[str] = []
    try:
        if made_swarm:
            docker("swarm", "init", "--advertise-addr", "127.0.0.1")
        subprocess.run([str(REPO / "deploy" / "swarm" / "build-proxy.sh"), proxy_image], check=True)
        made_images.append(proxy_image)
        with tempfile.TemporaryDirectory() as empty:  # the new image: same files, one more label, a new id
            (Path(empty) / "Dockerfile").write_text(f"FROM {image}\nLABEL nnserve.rehearsal=update\n")
            docker("build", "-q", "-t", new_image, empty)
        made_images.append(new_image)
        gateway = docker("network", "inspect", "docker_gwbridge", "-f", "{{(index .IPAM.Config 0).Gateway}}")
        env = {"NNSERVE_IMAGE": image, "PROXY_IMAGE": proxy_image, "PROXY_PORT": str(port),
               "PROXY_GRPC_PORT": str(grpc_port), "PROXY_ALLOW": gateway}  # fmt: skip
        subprocess.run(
            ["docker", "stack", "deploy", "--resolve-image", "never", "-c", "deploy/swarm/stack.yml", STACK],
            cwd=REPO, env={**os.environ, **env}, check=True, capture_output=True, text=True,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        wait_for("three healthy replicas", settled(3))
        wait_for("the proxy", lambda: _answers(url + "/readyz"), deadline_s=60)
        wait_for("the proxy's gRPC", lambda: _grpc_ready(f"127.0.0.1:{grpc_port}"), deadline_s=60)
        yield url
    finally:
        _remove(made_swarm, made_images, remove_gateway=made_swarm and not had_gateway)


def new_image_of(image: str) -> str:
    return f"{image}-rehearsal-update"


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _grpc_ready(target: str) -> bool:
    try:
        with grpc.insecure_channel(target) as channel:
            return pb_grpc.GRPCInferenceServiceStub(channel).ServerReady(pb.ServerReadyRequest(), timeout=5).ready
    except grpc.RpcError:
        return False


def _remove(made_swarm: bool, images: list[str], remove_gateway: bool) -> None:
    subprocess.run(["docker", "stack", "rm", STACK], capture_output=True)
    # The stack's containers and network go asynchronously: wait, so the images are no longer in use.
    gone = lambda: not docker("ps", "-aq", "--filter", f"label=com.docker.stack.namespace={STACK}")  # noqa: E731
    try:
        wait_for("the stack's containers to go", gone, deadline_s=90)
    except TimeoutError as e:
        print(f"cleanup: {e}", file=sys.stderr)
    if made_swarm:
        subprocess.run(["docker", "swarm", "leave", "--force"], capture_output=True)
    if remove_gateway:
        subprocess.run(["docker", "network", "rm", "docker_gwbridge"], capture_output=True)
    for image in images:
        subprocess.run(["docker", "image", "rm", "-f", image], capture_output=True)


# --- the scenarios --------------------------------------------------------------------------------------
def under_load(url: str, grpc_target: str, out: Path, action: Callable[[], dict], warm_s: float = 6, after_s: float = 4
               ) -> dict:  # fmt: skip
    """Locust through the proxy, HTTP and gRPC (at `grpc_target`); `action` runs after warm_s seconds of it; Locust
    stops after_s later."""
    out.mkdir(parents=True)
    retried = proxy_retries()
    run = locust([LOCUSTFILE, GRPC_LOCUSTFILE], url, users=USERS, spawn_rate=USERS, seconds=600, out=out,
                 env={"NNSERVE_GRPC_TARGET": grpc_target})  # fmt: skip
    try:
        time.sleep(warm_s)
        figures = action()
        time.sleep(after_s)
    finally:
        run.stop()
    rows = read_stats(out)
    stats = rows["Aggregated"]
    grpc_requests = sum(int(r["Request Count"]) for r in rows.values() if r["Type"] == "grpc")
    failures = int(stats["Failure Count"])
    figures |= {"requests": int(stats["Request Count"]), "grpc_requests": grpc_requests, "failed": failures,
                "p99_ms": stats["99%"],
                "retried_by_the_proxy": proxy_retries() - retried}  # fmt: skip
    if failures:
        figures["failures"] = (out / "locust_failures.csv").read_text().strip().splitlines()[1:6]
    return figures


def rolling_update(image: str) -> dict:
    new_image = new_image_of(image)
    start = time.monotonic()
    docker("service", "update", "--detach=false", "--image", new_image, SERVICE, timeout=600)
    # The CLI returns once the tasks have converged, which is also true of an update that failed and was rolled
    # back (failure_action: rollback): so wait for the update's own end, whichever it is, and say why.
    ended = lambda: update_state()[0] in ENDED  # noqa: E731
    try:
        wait_for("the update to end", ended, deadline_s=180)
    except TimeoutError as e:
        raise RuntimeError(f"{e}\n{update_report()}") from None
    took = time.monotonic() - start
    state, message = update_state()
    running = containers()
    on_new = sum(image_of(c) == new_image for c in running)
    figures = {"update_s": round(took, 1), "update_state": state, "replicas_on_new_image": f"{on_new}/{len(running)}",
               "ok": state == "completed" and on_new == len(running) == 3}  # fmt: skip
    if not figures["ok"]:
        print(f"the rolling update: {state}: {message}\n{update_report()}", file=sys.stderr)
    return figures


def update_state() -> tuple[str, str]:
    """The service's update state and Swarm's message ("", "" while it has none)."""
    status = json.loads(docker("service", "inspect", "-f", "{{json .UpdateStatus}}", SERVICE)) or {}
    return status.get("State", ""), status.get("Message", "")


def update_report() -> str:
    """What Swarm says of the update and of each task (a failed one's error and its log's last lines), for a
    failed rehearsal."""
    status = docker("service", "inspect", "-f", "{{json .UpdateStatus}}", SERVICE)
    tasks = docker("service", "ps", "--no-trunc", "--format", "{{.ID}} {{.Name}} {{.Image}} {{.DesiredState}} "
                   "{{.CurrentState}} {{.Error}}", SERVICE).splitlines()  # fmt: skip
    report = [f"UpdateStatus: {status}", "tasks:", *tasks]
    for task in tasks:
        task_id, name, _image, _desired, state, *_ = task.split()
        if state in ("Failed", "Rejected"):
            logs = subprocess.run(["docker", "service", "logs", "--raw", "--tail", "30", task_id],
                                  capture_output=True, text=True, timeout=60)  # fmt: skip
            report += [f"{name} {task_id[:12]} ({state}), its log's last lines:", logs.stdout + logs.stderr]
    return "\n".join(report)


def kill_one() -> dict:
    victim = containers()[0]
    docker("kill", "-s", "KILL", victim)
    replaced = wait_for("the killed replica replaced", lambda: victim not in containers() and settled(3)())
    return {"killed": victim[:12], "replaced_after_s": round(replaced, 1), "ok": True}


def scale_out_and_in() -> dict:
    docker("service", "scale", "--detach=false", f"{SERVICE}=3", timeout=300)
    wait_for("three healthy replicas", settled(3))
    three = containers()
    before = {c: predictions(c) for c in three}
    time.sleep(10)  # three replicas take the load
    share = {c[:12]: int(predictions(c) - before[c]) for c in three}
    docker("service", "scale", "--detach=false", f"{SERVICE}=1", timeout=300)
    wait_for("one replica", settled(1))
    total = sum(share.values())
    spread = total > 0 and min(share.values()) >= 0.1 * total  # every replica took a real part of it
    return {"per_replica_predictions": share, "ok": spread}


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--image", required=True, help="the nnserve image (make container builds it)")
    args.add_argument("--record", action="store_true", help="append the figures to loadtests/RESULTS.md")
    opts = args.parse_args(argv)
    results: dict[str, dict] = {}
    port, grpc_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp, rehearsal(opts.image, port, grpc_port) as url:
        out, target = Path(tmp), f"127.0.0.1:{grpc_port}"
        update = lambda: rolling_update(opts.image)  # noqa: E731
        results["a) rolling update to a new image"] = under_load(url, target, out / "a", update)
        results["b) one replica SIGKILLed"] = under_load(url, target, out / "b", kill_one)
        docker("service", "scale", "--detach=false", f"{SERVICE}=1", timeout=300)  # (c) starts from one
        wait_for("one replica", settled(1))
        results["c) scale 1 -> 3 -> 1"] = under_load(url, target, out / "c", scale_out_and_in)
    lines = [f"{name}: " + json.dumps(figures) for name, figures in results.items()]
    passed = all(f["ok"] and f["grpc_requests"] > 0 and f["requests"] > f["grpc_requests"] and f["failed"] == 0
                 for f in results.values())  # fmt: skip
    lines.append("swarm rehearsal " + ("passed" if passed else "FAILED"))
    print("\n".join(lines))
    if opts.record:
        with open(RESULTS, "a") as f:
            title = f"make swarm-test, {time.strftime('%Y-%m-%d %H:%M')} ({machine()}, {USERS} Locust users)"
            f.write(f"\n## {title}\n\n```\n" + "\n".join(lines) + "\n```\n")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
