"""bjc.sim fault injection: 500/429 with Retry-After, dropped watches, delays, expired
history, revoked tokens; and bjc's pod watch and client living through them."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
from pathlib import Path

import aiohttp
import pytest
import yaml
from kubernetes_asyncio import client, watch

from bjc.kube.client import KubeClient, kubeconfig_credentials
from bjc.kube.objects import Pod
from bjc.kube.podwatch import RETRY_FIRST_S, RETRY_MAX_S, PodWatcher
from bjc.sim import SimCluster
from tests.exec_plugin import ExecPluginScript

NS = "default"


def pod(name: str, labels: dict[str, str] | None = None) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": labels or {}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "main", "image": "busybox"}]},
    }


async def test_429_with_retry_after_for_one_verb_and_resource(sim: SimCluster) -> None:
    sim.faults.fail(1.0, status=429, retry_after=7, verb="list", resource="pods")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sim.url}/api/v1/namespaces/{NS}/pods") as r:
            body = await r.json()
            assert r.status == 429 and r.headers["Retry-After"] == "7"
            assert body["reason"] == "TooManyRequests"
            assert body["details"]["retryAfterSeconds"] == 7
        async with http.get(f"{sim.url}/api/v1/nodes") as r:
            assert r.status == 200  # other resources unaffected
        async with http.post(f"{sim.url}/api/v1/namespaces/{NS}/pods", json=pod("ok")) as r:
            assert r.status == 201  # other verbs unaffected
        sim.faults.clear()
        async with http.get(f"{sim.url}/api/v1/namespaces/{NS}/pods") as r:
            assert r.status == 200


async def statuses(sim: SimCluster, n: int) -> list[int]:
    async with aiohttp.ClientSession() as http:
        out = []
        for _ in range(n):
            async with http.get(f"{sim.url}/api/v1/nodes") as r:
                out.append(r.status)
        return out


async def test_500_share_is_deterministic_per_seed() -> None:
    runs = []
    for _ in range(2):
        sim = SimCluster(seed=42)
        await sim.start()
        try:
            sim.faults.fail(0.5, status=500)
            runs.append(await statuses(sim, 40))
        finally:
            await sim.stop()
    assert runs[0] == runs[1]
    assert set(runs[0]) == {200, 500}


async def test_typed_client_sees_500(sim: SimCluster, kube_api_client) -> None:
    sim.faults.fail(1.0, status=500, verb="get", resource="pods/status")
    sim.create(pod("p"))
    core = client.CoreV1Api(kube_api_client)
    assert (await core.read_namespaced_pod("p", NS)).metadata.name == "p"
    with pytest.raises(client.exceptions.ApiException) as exc:
        await core.read_namespaced_pod_status("p", NS)
    assert exc.value.status == 500


async def test_drop_watches_ends_streams_and_watch_module_reconnects(
    sim: SimCluster, kube_api_client
) -> None:
    core = client.CoreV1Api(kube_api_client)
    rv = (await core.list_namespaced_pod(NS)).metadata.resource_version
    names: list[str] = []
    async with watch.Watch() as w, asyncio.timeout(10):
        # no timeout_seconds: kubernetes_asyncio reconnects from the last resourceVersion
        stream = w.stream(core.list_namespaced_pod, NS, resource_version=rv)
        sim.create(pod("one"))
        async for ev in stream:
            names.append(ev["object"].metadata.name)
            if len(names) == 1:
                assert sim.faults.drop_watches() == 1
                sim.create(pod("two"))
            else:
                break
    assert names == ["one", "two"]

    # a raw stream just ends
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sim.url}/api/v1/pods", params={"watch": "true"}) as r:
            sim.create(pod("three"))
            first = json.loads(await r.content.readline())
            assert first["object"]["metadata"]["name"] in ("one", "two", "three")
            sim.faults.drop_watches()
            rest = [line async for line in r.content]
    assert len(rest) <= 2  # whatever was queued, then the end of the stream


async def test_delay_slows_responses(sim: SimCluster) -> None:
    sim.faults.delay(5)
    async with aiohttp.ClientSession() as http:
        with pytest.raises(TimeoutError):
            async with http.get(
                f"{sim.url}/api/v1/nodes", timeout=aiohttp.ClientTimeout(total=0.1)
            ):
                pass
        sim.faults.delay(0)
        async with http.get(f"{sim.url}/api/v1/nodes") as r:
            assert r.status == 200


async def test_expire_history_makes_old_versions_410(sim: SimCluster) -> None:
    rv = str(sim.store.rv)
    sim.create(pod("p"))
    sim.faults.expire_history()
    async with aiohttp.ClientSession() as http:
        async with http.get(
            f"{sim.url}/api/v1/pods", params={"watch": "1", "resourceVersion": rv}
        ) as r:
            event = json.loads(await r.content.readline())
    assert event["type"] == "ERROR" and event["object"]["code"] == 410


async def test_admin_http_paths(sim: SimCluster) -> None:
    async with aiohttp.ClientSession() as http:
        base = f"{sim.url}/_sim/faults"
        async with http.post(
            f"{base}/fail", json={"share": 1, "status": 429, "retry_after": 2}
        ) as r:
            assert r.status == 200
        async with http.get(f"{sim.url}/api/v1/nodes") as r:
            assert r.status == 429 and r.headers["Retry-After"] == "2"
        async with http.post(f"{base}/clear") as r:
            assert r.status == 200
        async with http.get(f"{sim.url}/api/v1/nodes") as r:
            assert r.status == 200
        async with http.post(f"{base}/fail", json={"share": 3}) as r:
            assert r.status == 400
            assert "share must be within 0..1" in (await r.json())["message"]
        async with http.post(f"{base}/drop-watches") as r:
            assert (await r.json()) == {"dropped": 0}
        async with http.post(f"{base}/expire-history") as r:
            assert r.status == 200
        async with http.post(f"{base}/delay", json={"seconds": 0}) as r:
            assert r.status == 200
        async with http.post(f"{base}/nonsense") as r:
            assert r.status == 404


def test_fault_arguments_are_checked() -> None:
    sim = SimCluster()
    with pytest.raises(ValueError, match="status must be 500, 429 or 403"):
        sim.faults.fail(0.1, status=503)
    with pytest.raises(ValueError, match="delay seconds must be >= 0"):
        sim.faults.delay(-1)


async def test_fail_times_is_an_outage_of_n_requests(sim: SimCluster) -> None:
    sim.faults.fail(1.0, status=500, verb="list", resource="nodes", times=2)
    async with aiohttp.ClientSession() as http:
        codes = []
        for _ in range(3):
            async with http.get(f"{sim.url}/api/v1/nodes") as r:
                codes.append(r.status)
    assert codes == [500, 500, 200] and sim.faults.rules == []
    with pytest.raises(ValueError, match="fail times must be >= 1"):
        sim.faults.fail(1.0, times=0)


def most_attempts(window: float) -> int:
    """How many attempts the pod watch's backoff allows within ``window`` seconds: one,
    then one after each pause; pause k is at least half of min(cap, first * 2**k)."""
    attempts, spent = 1, 0.0
    while True:
        spent += min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (attempts - 1)) / 2
        if spent > window:
            return attempts
        attempts += 1


class WatchRetries(logging.Handler):
    """Wakes the test on each retry the pod watch logs."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if any(word in record.getMessage() for word in ("retrying in", "relisting")):
            self.count += 1
            self.changed.set()

    async def reach(self, n: int) -> None:
        while self.count < n:
            self.changed.clear()
            await self.changed.wait()


class Watched:
    """A running PodWatcher over pods labelled app=bjc, with an event per pod name seen;
    the watch runs while the context is open."""

    def __init__(self, kube: KubeClient) -> None:
        self.seen: collections.defaultdict[str, asyncio.Event] = collections.defaultdict(
            asyncio.Event
        )
        self.watcher = PodWatcher(
            kube, NS, "app=bjc", lambda p, _: self.seen[p.metadata.name].set()
        )
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Watched:
        self._task = asyncio.create_task(self.watcher.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def wait_for(self, name: str) -> None:
        async with asyncio.timeout(30):
            await self.seen[name].wait()


@pytest.fixture
async def retries():
    handler = WatchRetries()
    logger = logging.getLogger("bjc.kube.podwatch")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


@pytest.mark.parametrize("storm", ["410 Gone", "500 on watch"])
async def test_watch_storms_are_bounded_by_backoff_and_converge(
    sim: SimCluster, retries: WatchRetries, storm: str
) -> None:
    labels = {"app": "bjc"}
    sim.create(pod("before", labels))
    loop = asyncio.get_running_loop()
    async with KubeClient.from_url(sim.url) as kube:
        async with Watched(kube) as watched:
            await watched.wait_for("before")
            if storm == "410 Gone":
                # no write follows, so every relist hands out a resourceVersion that is
                # already too old to watch from: relist, 410, relist, ...
                sim.faults.expire_history()
                attempts = lambda: watched.watcher.relists  # noqa: E731
            else:
                sim.faults.fail(1.0, status=500, verb="watch")
                attempts = lambda: sim.faults.injected  # noqa: E731
            sim.faults.drop_watches()
            async with asyncio.timeout(30):
                await retries.reach(2)  # the storm is on
            first, started = attempts(), loop.time()
            await asyncio.sleep(2)
            window = loop.time() - started
            assert attempts() - first <= most_attempts(window), (attempts() - first, window)

            sim.faults.clear()
            relists = watched.watcher.relists
            sim.create(pod("after", labels))
            await watched.wait_for("after")
            if storm == "410 Gone":  # the write makes the next relist's version watchable
                relists = watched.watcher.relists
            sim.create(pod("watched", labels))
            await watched.wait_for("watched")
            assert watched.watcher.relists == relists  # it came through the watch
            assert set(watched.watcher.pods) == {"before", "after", "watched"}


async def test_last_contact_moves_only_while_the_apiserver_answers(
    sim: SimCluster, retries: WatchRetries
) -> None:
    labels = {"app": "bjc"}
    loop = asyncio.get_running_loop()
    async with KubeClient.from_url(sim.url) as kube:
        watched = Watched(kube)
        watcher = watched.watcher
        assert watcher.last_contact == 0.0
        async with watched:
            await watcher.synced.wait()
            listed = watcher.last_contact
            assert 0 < listed <= loop.time()
            sim.create(pod("e", labels))
            await watched.wait_for("e")
            assert watcher.last_contact > listed

            sim.faults.fail(1.0, status=500)  # every list and watch fails
            sim.faults.drop_watches()
            async with asyncio.timeout(30):
                await retries.reach(retries.count + 1)
                stale = watcher.last_contact
                await retries.reach(retries.count + 2)
            assert watcher.last_contact == stale

            sim.faults.clear()
            sim.create(pod("f", labels))
            await watched.wait_for("f")
            assert watcher.last_contact > stale


async def test_token_check(sim: SimCluster) -> None:
    async with aiohttp.ClientSession() as http:

        async def status(token: str | None, path: str = "/api/v1/nodes") -> int:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with http.get(sim.url + path, headers=headers) as r:
                if r.status == 401:
                    body = await r.json()
                    assert (body["kind"], body["reason"], body["code"]) == (
                        "Status",
                        "Unauthorized",
                        401,
                    )
                return r.status

        assert await status(None) == 200  # off by default
        sim.auth.accept("good")
        assert [await status(t) for t in (None, "bad", "good")] == [401, 401, 200]
        assert await status(None, "/_sim/faults/nonsense") == 404  # admin paths: unchecked
        sim.auth.accept("newer")
        assert await status("good") == 401  # revoked
        assert sim.auth.rejected == 3


async def test_exec_credentials_rotate_while_the_sim_checks_tokens(
    sim: SimCluster, tmp_path: Path
) -> None:
    plugin = ExecPluginScript(tmp_path / "plugin")  # run n prints tok-n
    doc = sim.kubeconfig()
    doc["users"][0]["user"] = {"exec": plugin.stanza()}
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(doc))
    sim.auth.accept("tok-1")
    labels = {"app": "bjc"}
    async with KubeClient(kubeconfig_credentials(str(kubeconfig))) as kube:
        async with Watched(kube) as watched:
            await watched.watcher.synced.wait()
            sim.create(pod("a", labels))
            await watched.wait_for("a")  # through a watch opened with tok-1
            assert plugin.runs() == 1

            # revoked before it expired: a 401, a new token, the call goes through
            plugin.lifetime = 2  # and the next token expires soon
            sim.auth.accept("tok-2")
            items, _ = await kube.list(f"/api/v1/namespaces/{NS}/pods", Pod)
            assert [p.metadata.name for p in items] == ["a"]
            assert (plugin.runs(), sim.auth.rejected) == (2, 1)

            # expired: renewed before use, no 401
            plugin.lifetime = 3600
            sim.auth.accept("tok-2", "tok-3")
            await asyncio.sleep(2)
            await kube.list(f"/api/v1/namespaces/{NS}/pods", Pod)
            assert (plugin.runs(), sim.auth.rejected) == (3, 1)

            # a watch reconnecting with a revoked token renews it too
            sim.auth.accept("tok-4")
            sim.faults.drop_watches()
            sim.create(pod("b", labels))
            await watched.wait_for("b")
            assert (plugin.runs(), sim.auth.rejected) == (4, 2)
