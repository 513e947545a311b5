"""The Kubernetes and KServe manifests under deploy/, checked offline: every kustomization renders with
kubectl's kustomize; every object validates strictly (an unknown field fails) against the Kubernetes
API schema of a current release (kubernetes-validate) or, for custom resources, against the CRD schema
kept in deploy/kubernetes/crds; and the numbers that must agree do (grace periods, the autoscaler's
metric, the worker count). Each kind of breakage is tried on a copy and must fail."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.conftest import REPO

DEPLOY = REPO / "deploy"
CRDS = DEPLOY / "kubernetes" / "crds"
KUBERNETES = kubernetes_validate.latest_version()
KUSTOMIZATIONS = {
    "kubernetes/overlays/cpu": {"Namespace", "ConfigMap", "Secret", "Service", "Deployment",
                                "HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor"},
    "kubernetes/overlays/gpu": {"Deployment", "HorizontalPodAutoscaler"},
    "kubernetes/overlays/models-volume": {"Deployment", "PersistentVolumeClaim"},
    "kubernetes/prometheus-adapter": {"ConfigMap"},
    "kserve/base": {"InferenceService"},
    "kserve/canary": {"InferenceService"},
    "kserve/grpc": {"InferenceService"},
}  # fmt: skip


# --- rendering and validating --------------------------------------------------------------------------
def deploy_copy(tmp_path: Path) -> Path:
    """deploy/ with the API keys file a deployer writes (never committed), in a temporary directory."""
    root = tmp_path / "deploy"
    shutil.copytree(DEPLOY, root, ignore=shutil.ignore_patterns("api-keys.txt"))
    (root / "kubernetes" / "base" / "api-keys.txt").write_text("a-test-key\n")
    return root


def render(root: Path, kustomization: str) -> list[dict[str, Any]]:
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl (with its built-in kustomize v5) is needed: see docs/deployment.md")
    done = subprocess.run(["kubectl", "kustomize", str(root / kustomization)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RenderError(done.stderr.strip())
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


class RenderError(Exception):
    pass


def problems(objects: list[dict[str, Any]]) -> list[str]:
    found = []
    for obj in objects:
        name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        crd = crd_schema(obj.get("apiVersion", ""), obj.get("kind", ""))
        try:
            if crd is not None:
                jsonschema.Draft7Validator(crd).validate(obj)
            else:
                kubernetes_validate.validate(obj, KUBERNETES, strict=True)
        except (jsonschema.ValidationError, kubernetes_validate.SchemaNotFoundError) as e:
            found.append(f"{name}: {getattr(e, 'message', e)}")
    return found


def crd_schema(api_version: str, kind: str) -> dict[str, Any] | None:
    """The kept CRD schema for this apiVersion and kind, made strict; None for the built-in kinds."""
    group, _, version = api_version.rpartition("/")
    for path in CRDS.glob(f"*.{group}.{version}.json.gz"):
        kept = json.loads(gzip.decompress(path.read_bytes()))
        if kept["kind"] == kind:
            return strict(kept["schema"])
    return None


def strict(node: Any) -> Any:
    """Objects with declared properties take no others, unless the schema says it keeps unknown fields:
    what the API server's strict field validation (kubectl's default) enforces."""
    if isinstance(node, list):
        return [strict(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: strict(v) for k, v in node.items()}
    keeps_unknown = "additionalProperties" in node or node.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in node and not keeps_unknown:
        node["additionalProperties"] = False
    return node


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    root = deploy_copy(tmp_path_factory.mktemp("deploy"))
    return {k: render(root, k) for k in KUSTOMIZATIONS}


def the(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (obj,) = [o for o in objects if o["kind"] == kind]
    return obj


def server(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = the(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


# --- every manifest ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_each_kustomization_renders_and_every_object_validates_strictly(rendered, kustomization):
    objects = rendered[kustomization]
    assert KUSTOMIZATIONS[kustomization] <= {o["kind"] for o in objects}
    assert problems(objects) == []


BREAKAGES = {
    "a misspelled field": ("kubernetes/base/deployment.yaml", "revisionHistoryLimit:", "revisionHistoryLimt:"),
    "a wrong type": ("kubernetes/base/deployment.yaml", "replicas: 2", "replicas: two"),
    "a quoted number": ("kubernetes/base/service.yaml", "port: 80", 'port: "80"'),
    "a missing required field": ("kubernetes/base/deployment.yaml", "- name: nnserve\n          image:", "- image:"),
    "a field of the wrong object": ("kubernetes/base/hpa.yaml", "minReplicas: 2", "minReplicas: 2\n  replicas: 2"),
    "an unknown ServiceMonitor field": ("kubernetes/base/servicemonitor.yaml", "interval:", "intervals:"),
    "an unknown InferenceService field": ("kserve/base/inferenceservice.yaml", "minReplicas:", "minReplica:"),
    "a wrong InferenceService type": ("kserve/base/inferenceservice.yaml", "scaleTarget: 8", "scaleTarget: many"),
    "a missing file": ("kubernetes/base/kustomization.yaml", "  - pdb.yaml", "  - pdb.yml"),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_a_broken_manifest_fails(tmp_path, breakage):
    path, old, new = BREAKAGES[breakage]
    root = deploy_copy(tmp_path)
    text = (root / path).read_text()
    assert old in text
    (root / path).write_text(text.replace(old, new, 1))
    kustomization = "kserve/canary" if path.startswith("kserve") else "kubernetes/overlays/cpu"
    try:
        found = problems(render(root, kustomization))
    except RenderError as e:
        found = [str(e)]
    assert found, f"{breakage} passed validation"


# --- what must agree ---------------------------------------------------------------------------------
def test_the_pod_is_killed_only_after_its_drain_and_the_prestop_pause(rendered):
    objects = rendered["kubernetes/overlays/cpu"]
    pod = the(objects, "Deployment")["spec"]["template"]["spec"]
    settings = the(objects, "ConfigMap")["data"]
    pause = int(server(objects)["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod["terminationGracePeriodSeconds"] > pause + float(settings["NNSERVE_SHUTDOWN_GRACE_S"]) + 5


def test_the_probes_use_our_routes_and_readiness_follows_the_drain(rendered):
    container = server(rendered["kubernetes/overlays/cpu"])
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"  # 503 at once on SIGTERM
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["startupProbe"]["httpGet"]["path"] == "/livez"
    isvc = rendered["kserve/base"][0]["spec"]["predictor"]["containers"][0]
    assert isvc["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert env(isvc)["PROTOCOL"] == "v2"
    grpc_isvc = rendered["kserve/grpc"][0]["spec"]["predictor"]["containers"][0]  # KServe's gRPC port form
    assert grpc_isvc["ports"] == [{"name": "h2c", "containerPort": 8001, "protocol": "TCP"}]
    assert grpc_isvc["readinessProbe"]["grpc"]["port"] == 8001  # the gRPC health service
    service = next(o for o in rendered["kubernetes/overlays/cpu"] if o["kind"] == "Service")
    assert {"name": "grpc", "port": 8001, "targetPort": "grpc", "appProtocol": "kubernetes.io/h2c"} in service["spec"][
        "ports"
    ]
    assert {"name": "grpc", "containerPort": 8001} in container["ports"]


@pytest.mark.parametrize("kustomization", ["kubernetes/overlays/cpu", "kubernetes/overlays/gpu"])
def test_the_pods_run_locked_down_with_a_writable_tmp_only(rendered, kustomization):
    objects = rendered[kustomization]
    pod = the(objects, "Deployment")["spec"]["template"]["spec"]
    container = server(objects)
    assert pod["securityContext"]["runAsNonRoot"] is True
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert env(container)["BENTOML_HOME"].startswith("/tmp/") and "/tmp" in mounts
    settings = the(objects, "ConfigMap")["data"]
    assert str(Path(settings["NNSERVE_API_KEYS_FILE"]).parent) in mounts


def test_workers_follow_the_cpu_limit_and_the_gpu_pod_asks_for_a_gpu(rendered):
    cpu = server(rendered["kubernetes/overlays/cpu"])
    assert env(cpu)["NNSERVE_WORKERS"]["resourceFieldRef"] == {
        "containerName": "nnserve", "resource": "limits.cpu", "divisor": "1"
    }  # fmt: skip
    gpu_objects = rendered["kubernetes/overlays/gpu"]
    gpu = server(gpu_objects)
    assert env(gpu)["NNSERVE_WORKERS"] == "2" and gpu["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert gpu["image"].startswith("nnserve-gpu:")
    assert the(gpu_objects, "ConfigMap")["data"]["NNSERVE_PROVIDERS"] == "cuda"
    assert [m["type"] for m in the(gpu_objects, "HorizontalPodAutoscaler")["spec"]["metrics"]] == ["Pods"]


def test_models_from_a_volume_are_seeded_by_the_same_image_and_mounted_read_only(rendered):
    objects = rendered["kubernetes/overlays/models-volume"]
    pod = the(objects, "Deployment")["spec"]["template"]["spec"]
    container = server(objects)
    (seed,) = pod["initContainers"]
    assert seed["image"] == container["image"] == "nnserve:0.1.0"
    assert the(objects, "ConfigMap")["data"]["NNSERVE_MODELS_DIR"] == "/models"
    assert {"mountPath": "/models", "name": "models", "readOnly": True} in container["volumeMounts"]
    assert the(objects, "PersistentVolumeClaim")["metadata"]["namespace"] == "nnserve"


def test_the_autoscaler_reads_the_series_the_service_exports_through_the_adapter_rule(rendered):
    hpa = the(rendered["kubernetes/overlays/cpu"], "HorizontalPodAutoscaler")
    (pods,) = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    config = yaml.safe_load(the(rendered["kubernetes/prometheus-adapter"], "ConfigMap")["data"]["config.yaml"])
    values = yaml.safe_load((DEPLOY / "kubernetes" / "prometheus-adapter" / "values.yaml").read_text())
    assert values["rules"]["custom"] == config["rules"]  # the Helm route and the manifest route agree
    (rule,) = config["rules"]
    assert rule["name"]["as"] == pods
    series = re.match(r"(\w+)\{", rule["seriesQuery"]).group(1)
    assert f'"{series}"' in (REPO / "service" / "telemetry.py").read_text()  # the gauge the service sets
