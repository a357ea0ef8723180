"""The Helm chart (charts/bjc): `helm lint`, and `helm template` against the kustomize
manifests. One source of truth: rendered with settings equivalent to a kustomization,
the chart gives exactly the kustomization's objects (config.yaml and the pod template
compared as YAML), so neither can change without the other. The Go controller chart's
value names act as aliases; the README's values table is the generated one.

helm is the one tests/e2e/build_binaries.sh builds (`helm` target, `nox` does it) or
one on PATH; without it these tests are skipped with the reason, and fail under
CI=true.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.binaries import helm
from tools import chart_readme

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "bjc"
MANIFESTS = REPO / "manifests"
NAMESPACE = "bjc-system"

#: what the chart adds on purpose: the claim outlives `helm uninstall`
KEEP = "helm.sh/resource-policy"


@pytest.fixture(scope="module")
def helm_binary() -> str:
    found = helm()
    if found is None:
        why = "no helm (tests/e2e/build_binaries.sh helm builds it; nox does)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI: {why}", pytrace=False)
        pytest.skip(why)
    return found


def run(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{args}: {done.stderr}"
    return done.stdout


def template(helm_binary: str, *sets: str, values: dict[str, Any] | None = None) -> list[dict]:
    args = [helm_binary, "template", "bjc", str(CHART), "-n", NAMESPACE]
    for s in sets:
        args += ["--set", s]
    if values is not None:
        args += ["--set-json", f"config={json.dumps(values)}"]
    return [d for d in yaml.safe_load_all(run(*args)) if d]


def kustomize(tmp_path: Path, kustomization: dict[str, Any]) -> list[dict]:
    """`kubectl kustomize` of a kustomization in `tmp_path` (paths relative to the repo)."""
    rel = os.path.relpath(REPO, tmp_path)
    for key in ("resources", "components"):
        kustomization[key] = [f"{rel}/{p}" for p in kustomization.get(key, [])]
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return [d for d in yaml.safe_load_all(run("kubectl", "kustomize", str(tmp_path))) if d]


def comparable(objects: list[dict]) -> dict[tuple[str, str], dict]:
    """By kind and name; ConfigMap files as YAML, not text; the chart's keep annotation
    and kustomize's Namespace object aside."""
    out = {}
    for obj in objects:
        if obj["kind"] == "Namespace":
            continue
        obj = yaml.safe_load(yaml.safe_dump(obj))  # plain types
        meta = obj["metadata"]
        annotations = meta.get("annotations") or {}
        annotations.pop(KEEP, None)
        if not annotations:
            meta.pop("annotations", None)
        data = obj.get("data") or {}
        for key in ("config.yaml", "pod-template.yaml"):
            if key in data:
                data[key] = yaml.safe_load(data[key])
        if "dashboard.json" in data:
            data["dashboard.json"] = data["dashboard.json"].strip()
        out[(obj["kind"], meta["name"])] = obj
    return out


def test_helm_lint(helm_binary: str) -> None:
    run(helm_binary, "lint", "--strict", str(CHART))
    run(helm_binary, "lint", "--strict", str(CHART), "--set", "reports.type=newClaim")


def test_the_chart_renders_the_kustomize_base(helm_binary: str, tmp_path: Path) -> None:
    chart = comparable(template(helm_binary))
    base = comparable(
        kustomize(tmp_path, {"namespace": NAMESPACE, "resources": ["manifests/base"]})
    )
    assert chart.keys() == base.keys()
    for key in base:
        assert chart[key] == base[key], key


def test_the_chart_renders_the_example_overlay_with_a_new_claim(
    helm_binary: str, tmp_path: Path
) -> None:
    """The example overlay: callbackAuth token, a ReadWriteMany claim `bjc-reports`."""
    config = yaml.safe_load((MANIFESTS / "overlays" / "example" / "config.yaml").read_text())
    chart = comparable(template(helm_binary, "reports.type=newClaim", values=config))
    example = comparable(kustomize(tmp_path, {"resources": ["manifests/overlays/example"]}))
    assert chart.keys() == example.keys()
    for key in example:
        assert chart[key] == example[key], key
    (claim,) = [
        o
        for o in template(helm_binary, "reports.type=newClaim")
        if o["kind"] == "PersistentVolumeClaim"
    ]
    assert claim["metadata"]["annotations"] == {KEEP: "keep"}


def test_the_chart_renders_monitoring_and_the_dashboard(helm_binary: str, tmp_path: Path) -> None:
    sets = ("monitoring.podMonitor=true", "monitoring.prometheusRule=true", "grafanaDashboard=true")
    chart = comparable(template(helm_binary, *sets))
    kustomized = comparable(
        kustomize(
            tmp_path,
            {
                "namespace": NAMESPACE,
                "resources": ["manifests/base", "manifests/grafana"],
                "components": ["manifests/monitoring"],
            },
        )
    )
    assert chart.keys() == kustomized.keys()
    for key in kustomized:
        assert chart[key] == kustomized[key], key


def test_the_go_charts_value_names_are_aliases(helm_binary: str) -> None:
    objects = template(
        helm_binary,
        "deployment.replicas=1",
        "deployment.image=registry.example/bjc",
        "deployment.imageTag=9.9",
        "deployment.imagePullPolicy=Always",
        "deployment.withPersistentVolume=true",
        "deployment.storageClassName=fast",
        "deployment.cronExpression=* * * * *",
        "deployment.reportDirectory=/reports",
        "deployment.env.EXTRA=yes",
        "deployment.labels.team=a",
    )
    by_kind = {o["kind"]: o for o in objects}
    spec = by_kind["Deployment"]["spec"]
    (container,) = spec["template"]["spec"]["containers"]
    assert spec["replicas"] == 1
    assert spec["template"]["metadata"]["labels"]["team"] == "a"
    assert (container["image"], container["imagePullPolicy"]) == (
        "registry.example/bjc:9.9",
        "Always",
    )
    assert {"name": "EXTRA", "value": "yes"} in container["env"]
    assert container["volumeMounts"] == [{"name": "reports", "mountPath": "/reports"}]
    assert by_kind["PersistentVolumeClaim"]["spec"]["storageClassName"] == "fast"
    config = yaml.safe_load(by_kind["ConfigMap"]["data"]["config.yaml"])
    assert (config["cronExpression"], config["reportDirectory"]) == ("* * * * *", "/reports")


def test_a_wrong_reports_type_is_refused(helm_binary: str) -> None:
    args = [helm_binary, "template", "bjc", str(CHART), "--set", "reports.type=hostPath"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "reports.type" in done.stderr


def test_the_readme_lists_every_value_as_generated() -> None:
    readme = (CHART / "README.md").read_text()
    assert readme == chart_readme.readme(readme), "run: python tools/chart_readme.py"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for key in values:
        assert f"| `{key}" in readme, key
