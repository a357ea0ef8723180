"""Callback API over a real aiohttp server: admission, result and event routes.

Uploads are in test_callback_files.py. The controller side is a small in-test
CallbackTarget; store and metrics are the real ones.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from bjc.config.settings import Config, GaugeConfig, MetricsConfig
from bjc.kube.events import EventRequest, PodNotFound
from bjc.reports.execution import Stale, stale_attempt
from bjc.reports.metrics import Metrics
from bjc.reports.store import ReportStore
from bjc.web.callback import make_callback_app
from tests.report_files import stored
from tests.served import Served

NODE, EID = "node-a", "202401011200"
BASE = f"/report/{NODE}/{EID}"
SEED_RESULT = {
    "test": [
        {"value": 1.0, "labels": {"label_a": "AAA", "label_b": "BBB"}},
        {"value": 2.554, "labels": {"label_a": "AAA2", "label_b": "BBB2"}},
    ]
}
SEED_EVENT = {"warning": False, "reason": "TestReason", "message": "test message"}
SEED_EVENT_ARGS = {
    "warning": True,
    "reason": "TestReason",
    "message": "test message: %s",
    "args": ["a1"],
}


class Target:
    """The controller's answers: known (node, execution) pairs, tokens, existing pods."""

    def __init__(self) -> None:
        self.allowed = {(NODE, EID)}
        self.tokens = {(NODE, EID): "s3cret"}
        self.pods = {NODE}
        self.attempts: dict[str, int] = {}  # node -> its current attempt (default 0)
        self.fenced = asyncio.Event()  # set once a request was checked against the fence
        self.results: list[tuple[str, str]] = []
        self.events: list[tuple[str, str, EventRequest]] = []
        self.fail_events = False

    def execution_allowed(self, node: str, execution_id: str) -> bool:
        return (node, execution_id) in self.allowed

    def nodes_of(self, execution_id: str) -> set[str] | None:
        return {n for n, e in self.allowed if e == execution_id} or None

    def token_valid(self, node: str, execution_id: str, token: str, attempt: int) -> bool:
        return self.tokens.get((node, execution_id)) == token

    def stale(self, node: str, execution_id: str, attempt: int) -> Stale | None:
        self.fenced.set()
        return stale_attempt(node, attempt, self.attempts.get(node, 0), None)

    def result_received(self, node: str, execution_id: str) -> None:
        self.results.append((node, execution_id))

    async def create_event(self, node: str, execution_id: str, event: EventRequest) -> None:
        if node not in self.pods:
            raise PodNotFound(f"pod bjc-job-{node}-{execution_id} not found")
        if self.fail_events:
            raise RuntimeError("apiserver unavailable")
        self.events.append((node, execution_id, event))


class Env:
    def __init__(self, client: TestClient, root: Path, target: Target, metrics: Metrics) -> None:
        self.client = client
        self.root = root
        self.target = target
        self.metrics = metrics

    def series(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = self.metrics.render()[0].decode()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text)
            for s in fam.samples
        }

    def callbacks(self, route: str, code: int) -> float:
        key = ("bjc_callback_requests_total", (("code", str(code)), ("route", route)))
        return self.series().get(key, 0.0)


MakeEnv = Callable[..., Awaitable[Env]]


@pytest.fixture
def make_env(tmp_path: Path, aiohttp_client: Any) -> MakeEnv:
    async def make(
        *, dev_mode: bool = False, store_type: type[ReportStore] = ReportStore, **overrides: Any
    ) -> Env:
        root = tmp_path / "reports"
        config = Config(
            name="bjc",
            report_directory=str(root),
            metrics=MetricsConfig(
                prefix="foo",
                gauges={"test": GaugeConfig(help="help ...", labels=["label_a", "label_b"])},
            ),
            **overrides,
        )
        store = store_type(root)
        await store.create_execution(EID)
        metrics = Metrics(config)
        target = Target()
        app = make_callback_app(config, store, metrics, target, dev_mode=dev_mode)
        return Env(await aiohttp_client(Served(app)), root, target, metrics)

    return make


# ------------------------------------------------------------------- admission
@pytest.mark.parametrize("route", ["result", "file", "event"])
@pytest.mark.parametrize(("node", "eid"), [("other-node", EID), (NODE, "202401011300")])
async def test_unknown_node_or_execution_is_406(
    make_env: MakeEnv, route: str, node: str, eid: str
) -> None:
    env = await make_env()
    resp = await env.client.post(f"/report/{node}/{eid}/{route}", json=SEED_RESULT)
    assert resp.status == 406
    assert (await resp.text()).startswith("node / execution ID not allowed")
    assert env.callbacks(route, 406) == 1
    assert sorted(p.name for p in env.root.iterdir()) == [EID, "latest"]
    assert list((env.root / EID).iterdir()) == []


async def test_dev_mode_accepts_unknown_execution(make_env: MakeEnv) -> None:
    env = await make_env(dev_mode=True)
    resp = await env.client.post("/report/other-node/202402021200/result", json=SEED_RESULT)
    assert resp.status == 200
    saved = stored(env.root / "202402021200")["other-node.json"]
    assert json.loads(saved) == SEED_RESULT
    assert env.target.results == [("other-node", "202402021200")]


@pytest.mark.parametrize(
    ("eid", "status"), [("..", 404), ("%2E%2E", 404), ("a%2F..%2Fb", 400), ("a%2Fb", 400)]
)
async def test_dev_mode_refuses_unsafe_execution_ids(
    make_env: MakeEnv, eid: str, status: int
) -> None:
    env = await make_env(dev_mode=True)
    resp = await env.client.post(f"/report/{NODE}/{eid}/result", json=SEED_RESULT)
    # aiohttp normalises a `..` segment (also percent-encoded) away before routing
    # (404); an encoded slash reaches the handler and is refused.
    assert resp.status == status
    if status == 400:
        assert (await resp.text()).startswith("execution ID")
    assert sorted(p.name for p in env.root.parent.iterdir()) == ["reports"]
    assert sorted(p.name for p in env.root.iterdir()) == [EID, "latest"]


async def test_dev_mode_refuses_unsafe_node(make_env: MakeEnv) -> None:
    env = await make_env(dev_mode=True)
    resp = await env.client.post(f"/report/..%2F..%2Fx/{EID}/result", json=SEED_RESULT)
    assert resp.status == 400
    assert "node" in await resp.text()
    assert list((env.root / EID).iterdir()) == []


@pytest.mark.parametrize(
    ("query", "headers", "status"),
    [
        ("", {}, 401),
        ("?token=wrong", {}, 401),
        ("", {"Authorization": "Bearer wrong"}, 401),
        ("", {"Authorization": "Basic s3cret"}, 401),
        ("?token=s3cret", {}, 200),
        ("", {"Authorization": "Bearer s3cret"}, 200),
    ],
)
async def test_token_auth(
    make_env: MakeEnv, query: str, headers: dict[str, str], status: int
) -> None:
    env = await make_env(callback_auth="token")
    resp = await env.client.post(f"{BASE}/result{query}", json=SEED_RESULT, headers=headers)
    assert resp.status == status
    assert (f"{NODE}.json" in stored(env.root / EID)) == (status == 200)
    if status == 401:
        assert "token" in await resp.text()


async def test_token_auth_applies_to_every_route(make_env: MakeEnv) -> None:
    env = await make_env(callback_auth="token")
    assert (await env.client.post(f"{BASE}/file?name=a.txt", data=b"x")).status == 401
    assert (await env.client.post(f"{BASE}/event", json=SEED_EVENT)).status == 401
    ok = await env.client.post(f"{BASE}/file?name=a.txt&token=s3cret", data=b"x")
    assert ok.status == 200
    assert (await env.client.post(f"{BASE}/event?token=s3cret", json=SEED_EVENT)).status == 200


async def test_no_token_needed_without_token_auth(make_env: MakeEnv) -> None:
    env = await make_env()
    assert (await env.client.post(f"{BASE}/result", json=SEED_RESULT)).status == 200


# -------------------------------------------------------------------- attempts
def stale_callbacks(env: Env, route: str, reason: str) -> float:
    key = ("bjc_stale_callbacks_total", (("reason", reason), ("route", route)))
    return env.series().get(key, 0.0)


@pytest.mark.parametrize(
    "query",
    [
        "?retry=abc",
        "?retry=0",
        "?retry=-1",
        "?retry=01",
        "?retry=%D9%A1",  # an Arabic-Indic digit one: a digit, not an ASCII one
        "?retry=1234567890",
        "?retry=1&retry=1",
        "?retry=",
    ],
)
async def test_a_malformed_retry_marker_is_400_and_nothing_is_stored(
    make_env: MakeEnv, query: str
) -> None:
    env = await make_env()
    resp = await env.client.post(f"{BASE}/result{query}", json=SEED_RESULT)
    assert resp.status == 400
    assert (await resp.text()).startswith("invalid retry ")
    assert list((env.root / EID).iterdir()) == []


@pytest.mark.parametrize("route", ["result", "file", "event"])
async def test_a_callback_of_a_stale_attempt_is_409_counted_and_changes_nothing(
    make_env: MakeEnv, route: str
) -> None:
    env = await make_env()
    env.target.attempts[NODE] = 2  # retry 2 runs: the first attempt and retry 1 are stale
    body = {"result": SEED_RESULT, "event": SEED_EVENT}.get(route, {"a": 1})
    for query, reason in [("", "retried"), ("?retry=1", "retried"), ("?retry=3", "not_started")]:
        resp = await env.client.post(f"{BASE}/{route}{query}", json=body)
        assert resp.status == 409
        text = await resp.text()
        assert text.startswith("stale attempt: ") and "retry 2 is the current attempt" in text
        assert stale_callbacks(env, route, reason) == (2 if query == "?retry=1" else 1)
    assert env.callbacks(route, 409) == 3
    assert list((env.root / EID).iterdir()) == [] and env.target.events == []
    resp = await env.client.post(f"{BASE}/{route}?retry=2", json=body)
    assert resp.status == 200
    assert env.target.events or list((env.root / EID).iterdir())


@pytest.mark.parametrize("route", ["result", "file"])
async def test_a_body_that_arrives_after_its_attempt_was_retried_lands_nothing(
    make_env: MakeEnv, route: str
) -> None:
    """Admitted while current, retried while its body streams: refused before it lands."""
    env = await make_env()

    async def body() -> AsyncIterator[bytes]:
        yield b'{"test": '
        await env.target.fenced.wait()  # admitted: the request is past the first check
        env.target.attempts[NODE] = 1  # the controller retries the node meanwhile
        yield b'[{"value": 999.0}]}'

    resp = await env.client.post(f"{BASE}/{route}?name=late.json", data=body())
    assert resp.status == 409
    assert "retry 1 is the current attempt" in await resp.text()
    assert list((env.root / EID).iterdir()) == []
    assert stale_callbacks(env, route, "retried") == 1


# ---------------------------------------------------------------------- result
async def test_seed_result_is_stored_verbatim_and_exposed(make_env: MakeEnv) -> None:
    env = await make_env()
    body = json.dumps(SEED_RESULT, indent=3).encode() + b"\n"
    resp = await env.client.post(
        f"{BASE}/result", data=body, headers={"Content-Type": "application/json"}
    )
    assert resp.status == 200
    assert stored(env.root / EID)[f"{NODE}.json"] == body
    assert stored(env.root / "latest")[f"{NODE}.json"] == body
    series = env.series()
    common = (("executionID", EID), ("node", NODE))

    def test_series(a: str, b: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        return ("foo_test", (common[0], ("label_a", a), ("label_b", b), common[1]))

    assert series[test_series("AAA", "BBB")] == 1.0
    assert series[test_series("AAA2", "BBB2")] == 2.554
    assert series[("foo_processing", common)] == 0.0
    assert env.target.results == [(NODE, EID)]
    assert env.callbacks("result", 200) == 1


async def test_unconfigured_suffix_is_stored_without_metric(make_env: MakeEnv) -> None:
    env = await make_env()
    payload = {"other": [{"value": 3, "labels": {"x": "y"}}]}
    resp = await env.client.post(f"{BASE}/result", json=payload)
    assert resp.status == 200
    assert json.loads(stored(env.root / EID)[f"{NODE}.json"]) == payload
    assert not [k for k in env.series() if k[0] == "foo_other"]
    assert env.series()[("foo_processing", (("executionID", EID), ("node", NODE)))] == 0.0


async def test_result_labels_default_to_empty(make_env: MakeEnv) -> None:
    env = await make_env()
    resp = await env.client.post(f"{BASE}/result", json={"other": [{"value": 1}]})
    assert resp.status == 200


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{}", "empty result"),
        (b"", "error decoding result"),
        (b"not json", "error decoding result"),
        (b"[]", "error decoding result"),
        (b'{"test": {"value": 1}}', "error decoding result"),
        (b'{"test": [{"labels": {}}]}', "error decoding result"),
        (b'{"test": [{"value": "high"}]}', "error decoding result"),
        (b'{"bad-name": [{"value": 1}]}', "invalid metric name"),
        (b'{"": [{"value": 1}]}', "invalid metric name"),
        (b'{"a b": [{"value": 1}]}', "invalid metric name"),
    ],
)
async def test_bad_result_is_400_and_not_stored(
    make_env: MakeEnv, body: bytes, reason: str
) -> None:
    env = await make_env()
    resp = await env.client.post(f"{BASE}/result", data=body)
    assert resp.status == 400
    text = await resp.text()
    assert reason in text
    assert f"{NODE}.json" not in stored(env.root / EID)
    assert env.target.results == []
    assert env.callbacks("result", 400) == 1


async def test_labels_that_differ_from_the_config_are_accepted_like_go(make_env: MakeEnv) -> None:
    """The Go controller refuses only bad JSON, empty results and invalid names: a missing label
    is exposed as "", one that is not configured is dropped (the Go controller's rule)."""
    env = await make_env()
    body = {"test": [{"value": 3, "labels": {"label_a": "A", "z": "1"}}]}
    resp = await env.client.post(f"{BASE}/result", json=body)
    assert resp.status == 200
    assert f"{NODE}.json" in stored(env.root / EID)
    key = (
        "foo_test",
        (("executionID", EID), ("label_a", "A"), ("label_b", ""), ("node", NODE)),
    )
    assert env.series()[key] == 3


async def test_node_and_execution_labels_in_payload_are_ignored(make_env: MakeEnv) -> None:
    env = await make_env()
    labels = {"label_a": "A", "label_b": "B", "node": "forged", "executionID": "forged"}
    resp = await env.client.post(f"{BASE}/result", json={"test": [{"value": 5, "labels": labels}]})
    assert resp.status == 200
    key = (
        "foo_test",
        (("executionID", EID), ("label_a", "A"), ("label_b", "B"), ("node", NODE)),
    )
    assert env.series()[key] == 5


async def test_result_over_body_cap_is_413(make_env: MakeEnv) -> None:
    env = await make_env(max_upload_size=1024)
    big = {"other": [{"value": 1, "labels": {"x": "y" * 2000}}]}
    resp = await env.client.post(f"{BASE}/result", json=big)
    assert resp.status == 413
    assert f"{NODE}.json" not in stored(env.root / EID)
    assert env.callbacks("result", 413) == 1


async def test_result_for_pruned_execution_is_406(make_env: MakeEnv) -> None:
    env = await make_env()
    (env.root / EID).rmdir()  # pruned between admission and write
    resp = await env.client.post(f"{BASE}/result", json=SEED_RESULT)
    assert resp.status == 406


async def test_an_unwritable_execution_directory_is_503_with_a_reason_until_it_is_back(
    make_env: MakeEnv, caplog: pytest.LogCaptureFixture
) -> None:
    """Any OS error but "no space" (here ENOTDIR: a file where the directory belongs,
    which root gets too) is 503 with Retry-After; said once in the log; then recovers."""
    env = await make_env()
    directory = env.root / EID
    directory.rmdir()
    directory.write_bytes(b"")
    refused = [
        await env.client.post(f"{BASE}/result", json=SEED_RESULT),
        await env.client.post(f"{BASE}/file?name=a.txt", data=b"x"),
        await env.client.post(f"{BASE}/result", json=SEED_RESULT),
    ]
    reason = "report directory not writable (ENOTDIR: Not a directory); retry later\n"
    assert [(r.status, await r.text(), r.headers["Retry-After"]) for r in refused] == [
        (503, reason, "10")
    ] * 3
    assert env.callbacks("result", 503) == 2 and env.callbacks("file", 503) == 1
    assert env.target.results == []
    directory.unlink()
    directory.mkdir()
    assert (await env.client.post(f"{BASE}/result", json=SEED_RESULT)).status == 200
    assert json.loads(stored(directory)[f"{NODE}.json"]) == SEED_RESULT
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "bjc.reports.store"]
    assert [level for level, _ in said] == ["ERROR", "WARNING"]
    assert "is not writable (ENOTDIR): [Errno 20] Not a directory" in said[0][1]
    assert said[1][1] == f"report directory {env.root} is writable again"
    assert [r for r in caplog.records if r.exc_info] == []


async def test_other_methods_and_paths(make_env: MakeEnv) -> None:
    env = await make_env()
    assert (await env.client.get(f"{BASE}/result")).status == 405
    assert (await env.client.post(f"{BASE}/unknown")).status == 404
    assert (await env.client.get("/debug/pprof/")).status == 404
    assert env.callbacks("other", 404) == 2


# ----------------------------------------------------------------------- event
@pytest.mark.parametrize("payload", [SEED_EVENT, SEED_EVENT_ARGS])
async def test_seed_events(make_env: MakeEnv, payload: dict[str, Any]) -> None:
    env = await make_env()
    resp = await env.client.post(f"{BASE}/event", json=payload)
    assert resp.status == 200
    [(node, eid, event)] = env.target.events
    assert (node, eid) == (NODE, EID)
    assert event == EventRequest(**payload)
    assert env.callbacks("event", 200) == 1


@pytest.mark.parametrize(
    ("body", "prefix"),
    [
        (b"not json", "error decoding event"),
        (b"", "error decoding event"),
        (b'{"reason": 5, "message": "m"}', "error decoding event"),
        (b'{"reason": "R", "message": "m", "args": [1, 2]}', "error decoding event"),
        (b'{"message": "m"}', "invalid event: reason is required"),
        (b'{"reason": "lower", "message": "m"}', "invalid event: reason"),
        (b'{"reason": "Reason"}', "invalid event: message is required"),
    ],
)
async def test_bad_event_is_400(make_env: MakeEnv, body: bytes, prefix: str) -> None:
    env = await make_env()
    resp = await env.client.post(f"{BASE}/event", data=body)
    assert resp.status == 400
    assert (await resp.text()).startswith(prefix)
    assert env.target.events == []


async def test_event_for_missing_pod_is_404(make_env: MakeEnv) -> None:
    env = await make_env()
    env.target.pods.clear()
    resp = await env.client.post(f"{BASE}/event", json=SEED_EVENT)
    assert resp.status == 404
    assert (await resp.text()).startswith("error finding pod")
    assert env.callbacks("event", 404) == 1


async def test_event_api_failure_is_500(make_env: MakeEnv) -> None:
    env = await make_env()
    env.target.fail_events = True
    resp = await env.client.post(f"{BASE}/event", json=SEED_EVENT)
    assert resp.status == 500
    assert (await resp.text()).startswith("error creating event")
