"""The dashboard and the alerts, proven on a real Prometheus scraping a running `bjc demo`.

Prometheus (Debian's `prometheus` package, with promtool) runs as a child process on a
free loopback port with a generated configuration: it scrapes the demo every second
and evaluates the shipped rule file (its metric prefix set to the demo's). Every
Grafana panel query and every alert expression then goes through its HTTP API.
"""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.demo_process import (
    FAILED,
    NO_RESULT,
    NODES,
    PREFIX,
    TIMED_OUT,
    Lines,
    RunningDemo,
    require,
    running_demo,
    stop,
    wait_until,
)

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "manifests" / "monitoring"
RULES = MONITORING / "prometheus-rules.yaml"
DASHBOARD = REPO / "manifests" / "grafana" / "dashboard.json"
ALERT_TESTS = REPO / "tests" / "monitoring" / "alerts-test.yaml"
RATE_INTERVAL = "1m"  # what Grafana's $__rate_interval becomes at a 1s scrape interval

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def tools() -> dict[str, str]:
    return require("prometheus", "promtool")


@pytest.fixture(scope="module")
def demo(tools: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDemo]:
    with running_demo(tmp_path_factory.mktemp("demo")) as running:
        yield running


def for_prefix(text: str) -> str:
    """The rules and panels as an operator adapts them to metrics.prefix `bjc_demo`."""
    return text.replace("node_check_", f"{PREFIX}_")


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=30) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as e:  # a bad query: 400 with the parser's error
            body = json.load(e)
        assert body["status"] == "success", (path, params, body)
        return body["data"]

    def evaluated_after(self, when: datetime) -> bool:
        """Has every rule group been evaluated (whole seconds) after `when`?"""
        groups = self.get("/api/v1/rules")["groups"]
        return bool(groups) and all(
            datetime.fromisoformat(g["lastEvaluation"][:19] + "+00:00") > when for g in groups
        )

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", query=expr)
        assert data["resultType"] == "vector", (expr, data)
        return list(data["result"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def prometheus(
    tools: dict[str, str], demo: RunningDemo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    directory = tmp_path_factory.mktemp("prometheus")
    rules = directory / "rules.yaml"
    rules.write_text(for_prefix(RULES.read_text()))
    config = directory / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(rules)],
                "scrape_configs": [
                    {"job_name": "bjc", "static_configs": [{"targets": [demo.metrics_address]}]}
                ],
            }
        )
    )
    address = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [tools["prometheus"], f"--config.file={config}", f"--storage.tsdb.path={directory}/data",
         f"--web.listen-address={address}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        Lines(proc.stderr).wait_for("Server is ready to receive web requests")
        server = Prometheus(f"http://{address}")
        # enough scrapes for rate() over counters, and the rules evaluated on them
        wait_until(
            lambda: server.query('count_over_time(up{job="bjc"}[1m]) >= 3'),
            "three scrapes of the demo",
        )
        scraped = datetime.now(UTC).replace(microsecond=0)
        wait_until(lambda: server.evaluated_after(scraped), "the rules are evaluated on them")
        yield server
    finally:
        stop(proc)


def panel_targets() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]


def grafana_variables(expr: str, execution: str) -> str:
    for name, value in (("${prefix}", PREFIX), ("$prefix", PREFIX), ("$execution", execution),
                        ("$__rate_interval", RATE_INTERVAL)):  # fmt: skip
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr}"
    return expr


def test_every_dashboard_panel_returns_data(prometheus: Prometheus, demo: RunningDemo) -> None:
    targets = panel_targets()
    assert len(targets) >= 10
    for title, expr in targets:
        result = prometheus.query(grafana_variables(expr, demo.execution))
        assert result, f"panel {title!r}: no data for {expr}"
    failed = prometheus.query(
        grafana_variables('${prefix}_processing{executionID="$execution"} == 1', demo.execution)
    )
    assert {r["metric"]["node"] for r in failed} == {FAILED, NO_RESULT, TIMED_OUT}


def test_the_execution_variable_lists_the_executions(
    prometheus: Prometheus, demo: RunningDemo
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == "execution"]
    # Grafana's label_values(metric, label) is the series API's label values
    assert variable["query"]["query"] == "label_values(${prefix}_processing, executionID)"
    values = prometheus.get(
        "/api/v1/label/executionID/values", **{"match[]": f"{PREFIX}_processing"}
    )
    assert demo.execution in values


def test_every_alert_expression_evaluates(prometheus: Prometheus, demo: RunningDemo) -> None:
    rules = [r for g in yaml.safe_load(for_prefix(RULES.read_text()))["groups"] for r in g["rules"]]
    assert len(rules) == 10
    for rule in rules:
        prometheus.query(rule["expr"])  # parses and evaluates (an error fails in get)
    loaded = [r for g in prometheus.get("/api/v1/rules")["groups"] for r in g["rules"]]
    assert {r["name"] for r in loaded} == {r["alert"] for r in rules}
    assert all(r["health"] == "ok" for r in loaded), loaded


def test_too_many_failed_nodes_fires_for_the_demo(
    prometheus: Prometheus, demo: RunningDemo
) -> None:
    """3 of the 8 nodes fail in the demo: over the 10% threshold; the first execution's
    failures are all new (3 nodes newly failing, 3 of 8 at once); nothing else fires."""
    firing = prometheus.query('ALERTS{alertstate="firing"}')
    names = sorted(a["metric"]["alertname"] for a in firing)
    assert names == [
        "BjcFailedNodesHigh",
        "BjcManyNodesNewlyFailing",
        *["BjcNodeNewlyFailing"] * 3,
    ]
    for alert in firing:
        if alert["metric"]["alertname"] != "BjcNodeNewlyFailing":
            assert alert["metric"]["executionID"] == demo.execution
    rules = yaml.safe_load(for_prefix(RULES.read_text()))["groups"][0]["rules"]
    (rule,) = [r for r in rules if r["alert"] == "BjcFailedNodesHigh"]
    (ratio,) = prometheus.query(rule["expr"])
    assert float(ratio["value"][1]) == pytest.approx(3 / NODES)


# Label names the Go controller's series carry (dashboards and alerts query them by these
# names), which promtool's linter would have in snake_case; bjc's own series use
# executionID too, so that one query joins them.
GO_LABEL_NAMES = {"executionID", "poolSize", "reportHistory"}
CAMEL_CASE_FINDING = " label names should be written in 'snake_case' not 'camelCase'"
LINT_FINDINGS = 3  # promtool's exit code when it parsed everything and has lint findings


def test_promtool_check_metrics_accepts_the_exposition(
    tools: dict[str, str], demo: RunningDemo
) -> None:
    """The exposition parses; its only lint findings are the Go controller's label names."""
    with urllib.request.urlopen(f"http://{demo.metrics_address}/metrics", timeout=30) as resp:
        exposition = resp.read()
    assert f"{PREFIX}_processing".encode() in exposition
    done = subprocess.run(
        [tools["promtool"], "check", "metrics"], input=exposition, capture_output=True, timeout=60
    )
    findings = (done.stdout + done.stderr).decode().splitlines()
    assert done.returncode in (0, LINT_FINDINGS), findings
    families = {f.name: f for f in text_string_to_metric_families(exposition.decode())}
    for finding in findings:
        assert finding.endswith(CAMEL_CASE_FINDING), finding
        name = finding.removesuffix(CAMEL_CASE_FINDING)
        family = families.get(name) or families[name.removesuffix("_total")]
        names = {label for sample in family.samples for label in sample.labels}
        assert {n for n in names if n != n.lower()} <= GO_LABEL_NAMES, finding


def test_promtool_checks_both_rule_files(tools: dict[str, str], tmp_path: Path) -> None:
    operator_rules = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    extracted = tmp_path / "prometheusrule-spec.yaml"
    extracted.write_text(yaml.safe_dump(operator_rules["spec"]))
    for path in (RULES, extracted):
        done = subprocess.run(
            [tools["promtool"], "check", "rules", str(path)], capture_output=True, timeout=60
        )
        assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


def test_each_alert_fires_when_it_should(tools: dict[str, str]) -> None:
    """promtool's rule unit tests: synthetic series, expected alerts, the standby ignored."""
    done = subprocess.run(
        [tools["promtool"], "test", "rules", str(ALERT_TESTS)], capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
