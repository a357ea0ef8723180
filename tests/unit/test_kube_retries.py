"""bjc's Kubernetes client retries reads, never writes, on connection errors and timeouts."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import msgspec
import pytest
from aiohttp import web

from bjc.kube.client import Credentials, KubeClient, _decode_event
from bjc.kube.objects import Pod

PODS = "/api/v1/pods"


class FlakyServer:
    """Answers /api/v1/pods, but fails the first `failures` requests: it closes the
    connection without an answer ("disconnect") or answers too late ("timeout")."""

    def __init__(self, how: str, failures: int) -> None:
        self.how = how
        self.failures = failures
        self.requests: list[str] = []

    async def pods(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.method)
        if len(self.requests) <= self.failures:
            if self.how == "timeout":
                await asyncio.sleep(5)
            else:
                assert request.transport is not None
                request.transport.close()
        if request.method == "POST":
            return web.json_response({"metadata": {"name": "p"}}, status=201)
        return web.json_response({"metadata": {"resourceVersion": "3"}, "items": []})


async def flaky_client(aiohttp_server, how: str, failures: int) -> tuple[KubeClient, FlakyServer]:
    flaky = FlakyServer(how, failures)
    app = web.Application()
    app.router.add_route("*", PODS, flaky.pods)
    server = await aiohttp_server(app)
    kube = KubeClient(Credentials(server=str(server.make_url("")).rstrip("/")), timeout=0.5)
    return kube, flaky


@pytest.mark.parametrize("how", ["disconnect", "timeout"])
async def test_reads_are_retried(aiohttp_server, how):
    kube, flaky = await flaky_client(aiohttp_server, how, failures=2)
    async with kube:
        assert await kube.list(PODS, Pod) == ([], "3")
    assert flaky.requests == ["GET"] * 3


@pytest.mark.parametrize("how", ["disconnect", "timeout"])
async def test_reads_give_up_after_a_few_attempts(aiohttp_server, how):
    kube, flaky = await flaky_client(aiohttp_server, how, failures=100)
    async with kube:
        with pytest.raises((aiohttp.ClientConnectionError, TimeoutError)):
            await kube.list(PODS, Pod)
    # four attempts; within each, aiohttp itself sends an idempotent request once more
    # when the server drops the connection
    assert flaky.requests == ["GET"] * 4 * (2 if how == "disconnect" else 1)


@pytest.mark.parametrize("how", ["disconnect", "timeout"])
async def test_writes_are_not_retried(aiohttp_server, how):
    kube, flaky = await flaky_client(aiohttp_server, how, failures=1)
    async with kube:
        with pytest.raises((aiohttp.ClientConnectionError, TimeoutError)):
            await kube.create(PODS, {"metadata": {"name": "p"}})
    assert flaky.requests == ["POST"]


async def test_a_closed_client_is_not_retried(aiohttp_server, caplog):
    kube, flaky = await flaky_client(aiohttp_server, "disconnect", failures=0)
    await kube.close()
    caplog.set_level(logging.DEBUG, logger="bjc.kube.client")
    with pytest.raises(aiohttp.ClientConnectionError, match="closed"):
        await kube.list(PODS, Pod)
    assert [r for r in caplog.records if "retrying" in r.getMessage()] == []
    assert flaky.requests == []


def test_a_bookmark_from_a_real_apiserver_decodes_to_its_resource_version():
    line = (
        b'{"type":"BOOKMARK","object":{"kind":"Pod","apiVersion":"v1","metadata":'
        b'{"resourceVersion":"12345","creationTimestamp":null},'
        b'"spec":{"containers":null},"status":{}}}'
    )
    with pytest.raises(msgspec.ValidationError):  # what the typed view makes of it
        msgspec.json.decode(line[len(b'{"type":"BOOKMARK","object":') : -1], type=Pod)
    event = _decode_event(line, msgspec.json.Decoder(Pod))
    assert event.type == "BOOKMARK"
    assert event.object.metadata.resource_version == "12345"
