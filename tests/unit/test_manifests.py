"""The shipped manifests: the example ConfigMap is valid, kustomize builds every entry."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from bjc.config import load_config_map_manifest
from bjc.ownpod import LEADER_LABEL

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


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("entry", ["base", "overlays/example", "grafana"])
def test_kustomize_builds(entry):
    out = subprocess.run(
        ["kubectl", "kustomize", str(MANIFESTS / entry)],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    kinds = {d["kind"] for d in yaml.safe_load_all(out) if d}
    assert "ConfigMap" in kinds
    if entry != "grafana":
        assert {"Deployment", "Service", "Role", "ServiceAccount"} <= kinds


def test_the_controller_may_watch_and_answer_on_its_config_map():
    role = next(
        d
        for d in yaml.safe_load_all((MANIFESTS / "base" / "rbac.yaml").read_text())
        if d and d["kind"] == "Role"
    )
    (rule,) = [r for r in role["rules"] if "configmaps" in r["resources"]]
    assert {"get", "list", "watch", "patch"} <= set(rule["verbs"])
