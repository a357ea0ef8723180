"""The shipped manifests: the example ConfigMap is valid, kustomize builds every entry,
the NetworkPolicy lets only job pods reach the callback port, the overlay uses tokens."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import msgspec
import pytest
import yaml

from bjc.config.configmap import load_config_map_manifest
from bjc.config.podspec import OWNER_LABEL
from bjc.config.settings import load_config
from bjc.kube.ownpod import LEADER_LABEL

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"


def test_example_config_map_passes_bjc_validation():
    loaded = load_config_map_manifest((MANIFESTS / "base" / "configmap.yaml").read_text())
    assert loaded.config.name == "node-check"
    assert loaded.config.callback_service_name == "bjc"  # the Service of the base
    assert loaded.warnings == []


def test_callbacks_reach_the_leader_and_every_replica_can_be_ready():
    docs = {
        d["kind"]: d
        for f in ("service.yaml", "rbac.yaml", "deployment.yaml")
        for d in yaml.safe_load_all((MANIFESTS / "base" / f).read_text())
        if d
    }
    name = load_config_map_manifest((MANIFESTS / "base" / "configmap.yaml").read_text()).config.name
    assert docs["Service"]["spec"]["selector"][LEADER_LABEL] == name
    pod_rules = [r for r in docs["Role"]["rules"] if "pods" in r["resources"]]
    assert "patch" in pod_rules[0]["verbs"]  # the leader labels its own pod
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert docs["Deployment"]["spec"]["replicas"] == 2


def test_grafana_dashboard_queries_use_bjc_metric_names():
    dashboard = json.loads((MANIFESTS / "grafana" / "dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    names = ["_current_execution_id", "_processing", "_duration", "_pods"]
    names += ["bjc_execution_progress", "bjc_job_pods", "bjc_callback_requests_total"]
    for name in names:
        assert name in exprs, name


def _load(path: str) -> dict:
    return yaml.safe_load((MANIFESTS / path).read_text())


def test_network_policy_admits_job_pods_to_callbacks_and_monitoring_to_metrics():
    policy = _load("base/networkpolicy.yaml")
    deployment = _load("base/deployment.yaml")
    config = load_config_map_manifest((MANIFESTS / "base" / "configmap.yaml").read_text()).config
    pod = deployment["spec"]["template"]
    selected = policy["spec"]["podSelector"]["matchLabels"]
    assert selected.items() <= pod["metadata"]["labels"].items()  # the controller pods
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    ports = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
    [jobs, monitoring] = policy["spec"]["ingress"]

    assert [p["port"] for p in jobs["ports"]] == ["callback"]
    assert ports["callback"] == config.callback_service_port
    [source] = jobs["from"]
    assert list(source) == ["podSelector"]  # same namespace: where bjc creates job pods
    assert source["podSelector"]["matchExpressions"] == [
        {"key": OWNER_LABEL, "operator": "In", "values": [config.name]}
    ]

    assert [p["port"] for p in monitoring["ports"]] == ["metrics"]
    assert ports["metrics"] == config.metrics.port
    assert monitoring["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]


def test_example_overlay_is_the_base_config_with_token_auth():
    base = load_config_map_manifest((MANIFESTS / "base" / "configmap.yaml").read_text()).config
    overlay, warnings = load_config((MANIFESTS / "overlays/example/config.yaml").read_text())
    assert warnings == []
    assert base.callback_auth == "none"
    assert overlay.callback_auth == "token"
    # nothing else drifted apart
    assert msgspec.structs.replace(overlay, callback_auth="none") == base


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_example_overlay_builds_with_token_auth():
    out = subprocess.run(
        ["kubectl", "kustomize", str(MANIFESTS / "overlays/example")],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    [config_map] = [d for d in yaml.safe_load_all(out) if d and d["kind"] == "ConfigMap"]
    assert config_map["metadata"]["name"] == "bjc"  # as CONFIG_MAP_NAME says
    loaded = load_config_map_manifest(yaml.safe_dump(config_map))
    assert loaded.config.callback_auth == "token"
    policy = [d for d in yaml.safe_load_all(out) if d and d["kind"] == "NetworkPolicy"]
    assert policy[0]["metadata"]["namespace"] == "bjc-system"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("entry", ["base", "overlays/example", "overlays/single", "grafana"])
def test_kustomize_builds(entry):
    out = subprocess.run(
        ["kubectl", "kustomize", str(MANIFESTS / entry)],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    kinds = {d["kind"] for d in yaml.safe_load_all(out) if d}
    assert "ConfigMap" in kinds
    if entry != "grafana":
        assert {"Deployment", "Service", "Role", "ServiceAccount", "NetworkPolicy"} <= kinds


def kustomize(entry: str) -> list[dict]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(MANIFESTS / entry)],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_the_single_overlay_is_the_example_with_one_replica_recreated_on_one_rwo_volume():
    """Nothing but replicas, strategy and the claim's access mode differ from the
    example overlay: one pod at a time ever mounts the ReadWriteOnce volume."""
    single = {(d["kind"], d["metadata"]["name"]): d for d in kustomize("overlays/single")}
    example = {(d["kind"], d["metadata"]["name"]): d for d in kustomize("overlays/example")}
    assert single.keys() == example.keys()
    deployment, claim = (
        single[("Deployment", "bjc")],
        single[("PersistentVolumeClaim", "bjc-reports")],
    )
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert example[("Deployment", "bjc")]["spec"]["replicas"] == 2
    for objects in (single, example):  # apart from those, the same objects
        for key, field in [
            (("Deployment", "bjc"), "replicas"),
            (("Deployment", "bjc"), "strategy"),
            (("PersistentVolumeClaim", "bjc-reports"), "accessModes"),
        ]:
            objects[key]["spec"].pop(field, None)
    assert single == example


def test_prometheus_operator_rules_equal_the_plain_rule_file():
    rule = yaml.safe_load((MANIFESTS / "monitoring" / "prometheusrule.yaml").read_text())
    plain = yaml.safe_load((MANIFESTS / "monitoring" / "prometheus-rules.yaml").read_text())
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"] == plain


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_monitoring_component_scrapes_the_controller_pods(tmp_path):
    """An overlay of the base with the component, as the component's header says."""
    shutil.copytree(MANIFESTS, tmp_path / "manifests")
    overlay = tmp_path / "manifests" / "overlays" / "monitored"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "namespace: bjc-system\nresources: [../../base]\ncomponents: [../../monitoring]\n"
    )
    out = subprocess.run(
        ["kubectl", "kustomize", str(overlay)],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    docs = {d["kind"]: d for d in yaml.safe_load_all(out) if d}
    monitor, pod = docs["PodMonitor"], docs["Deployment"]["spec"]["template"]
    assert monitor["metadata"]["namespace"] == docs["PrometheusRule"]["metadata"]["namespace"]
    assert monitor["metadata"]["namespace"] == "bjc-system"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    ports = {p["name"] for p in pod["spec"]["containers"][0]["ports"]}
    assert endpoint["port"] in ports
    # the alert rules select job="bjc"
    assert {"targetLabel": "job", "replacement": "bjc"} in endpoint["relabelings"]


def test_the_controller_may_watch_and_answer_on_its_config_map():
    role = next(
        d
        for d in yaml.safe_load_all((MANIFESTS / "base" / "rbac.yaml").read_text())
        if d and d["kind"] == "Role"
    )
    (rule,) = [r for r in role["rules"] if "configmaps" in r["resources"]]
    assert {"get", "list", "watch", "patch"} <= set(rule["verbs"])


def test_patching_nodes_is_a_separate_component_not_in_the_base():
    """Least privilege: the base reads nodes; only the component lets bjc patch them."""
    base = list(yaml.safe_load_all((MANIFESTS / "base" / "rbac.yaml").read_text()))
    for doc in base:
        for rule in doc.get("rules", []):
            if any(r.startswith("nodes") for r in rule["resources"]):
                assert set(rule["verbs"]) <= {"get", "list", "watch"}
    component = MANIFESTS / "components" / "node-conditions"
    assert yaml.safe_load((component / "kustomization.yaml").read_text())["kind"] == "Component"
    (role, binding) = yaml.safe_load_all((component / "rbac.yaml").read_text())
    assert {(tuple(r["resources"]), tuple(r["verbs"])) for r in role["rules"]} == {
        (("nodes/status",), ("patch",)),
        (("nodes",), ("patch",)),
    }
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
