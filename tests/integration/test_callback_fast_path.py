"""What only the result fast path (bjc.web.fastresult) has, byte by byte over raw sockets.

Every other callback test already talks to it (their apps are served by bjc.web.serve,
see tests/served.py); these tests drive what aiohttp's client never sends: keep-alive
sequences, pipelined requests, handover to aiohttp in the middle of a connection,
chunked bodies, `Expect: 100-continue`, malformed and oversized heads, a client that
disconnects mid-body, and shutdown with connections open. `FastResultSite.served`
tells which server answered.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from bjc.reports.store import ReportStore
from bjc.web.callback import STORE
from bjc.web.fastresult import MAX_HEAD, FastResultSite
from tests.integration.test_callback import BASE, EID, NODE, Env, MakeEnv
from tests.integration.test_callback import make_env as make_env
from tests.report_files import stored

BODY = json.dumps({"test": [{"value": 1.5, "labels": {"label_a": "a", "label_b": "b"}}]}).encode()


def post(path: str, body: bytes = BODY, *, extra: str = "", version: str = "1.1") -> bytes:
    head = f"POST {path} HTTP/{version}\r\nHost: bjc\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


def site(env: Env) -> FastResultSite:
    runner = env.client.server.runner
    assert runner is not None
    (only,) = runner.sites
    assert isinstance(only, FastResultSite)
    return only


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body


async def read_response(reader: asyncio.StreamReader) -> Response:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Response(status, headers, body)


async def connect(env: Env) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    port = env.client.server.port
    assert port is not None
    return await asyncio.open_connection("127.0.0.1", port)


async def test_a_keep_alive_connection_carries_a_sequence_of_results(make_env: MakeEnv) -> None:
    env = await make_env()
    reader, writer = await connect(env)
    for i in range(3):
        body = json.dumps({"test": [{"value": float(i)}]}).encode()
        writer.write(post(f"{BASE}/result", body))
        answer = await read_response(reader)
        assert (answer.status, answer.body) == (200, b"")
        assert "connection" not in answer.headers  # HTTP/1.1: kept alive
        assert stored(env.root / EID)[f"{NODE}.json"] == body
    writer.close()
    assert site(env).served == 3
    assert env.callbacks("result", 200) == 3
    assert env.target.results == [(NODE, EID)] * 3


async def test_pipelined_results_are_answered_in_request_order(make_env: MakeEnv) -> None:
    env = await make_env()
    reader, writer = await connect(env)
    writer.write(
        post(f"{BASE}/result")  # 200
        + post(f"/report/unknown/{EID}/result")  # 406
        + post(f"{BASE}/result", b"{not json")  # 400
    )
    answers = [await read_response(reader) for _ in range(3)]
    assert [a.status for a in answers] == [200, 406, 400]
    assert answers[1].body == b"node / execution ID not allowed\n"
    assert answers[2].body.startswith(b"error decoding result: ")
    writer.close()
    assert site(env).served == 3


@pytest.mark.parametrize("pipelined", [False, True], ids=["one-by-one", "pipelined"])
async def test_a_file_upload_after_a_result_is_handed_to_aiohttp_in_order(
    make_env: MakeEnv, pipelined: bool
) -> None:
    env = await make_env()
    reader, writer = await connect(env)
    upload = post(
        f"{BASE}/file?name=notes.txt", b"some notes", extra="Content-Type: text/plain\r\n"
    )
    requests = [post(f"{BASE}/result"), upload, post(f"{BASE}/result", b'{"test": [{"value": 7}]}')]
    answers = []
    if pipelined:
        writer.write(b"".join(requests))
        answers = [await read_response(reader) for _ in requests]
    else:
        for request in requests:
            writer.write(request)
            answers.append(await read_response(reader))
    assert [(a.status, a.body) for a in answers] == [
        (200, b""),
        (200, f"{NODE}-notes.txt\n".encode()),
        (200, b""),
    ]
    files = stored(env.root / EID)
    assert files[f"{NODE}-notes.txt"] == b"some notes"
    assert files[f"{NODE}.json"] == b'{"test": [{"value": 7}]}'
    writer.close()
    assert site(env).served == 1  # the rest of the connection was aiohttp's
    assert env.callbacks("result", 200) == 2 and env.callbacks("file", 200) == 1


async def test_a_chunked_result_body(make_env: MakeEnv) -> None:
    env = await make_env()
    reader, writer = await connect(env)
    head = f"POST {BASE}/result HTTP/1.1\r\nHost: bjc\r\nTransfer-Encoding: chunked\r\n\r\n"
    writer.write(head.encode())
    for i in range(0, len(BODY), 7):
        piece = BODY[i : i + 7]
        writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        await writer.drain()
    writer.write(b"0\r\n\r\n")
    assert (await read_response(reader)).status == 200
    assert stored(env.root / EID)[f"{NODE}.json"] == BODY
    writer.close()
    assert site(env).served == 1


async def test_expect_100_continue_is_answered_before_the_body(make_env: MakeEnv) -> None:
    env = await make_env()
    reader, writer = await connect(env)
    head = post(f"{BASE}/result", extra="Expect: 100-continue\r\n")[: -len(BODY)]
    writer.write(head)
    assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(BODY)
    assert (await read_response(reader)).status == 200
    assert stored(env.root / EID)[f"{NODE}.json"] == BODY
    writer.close()
    assert site(env).served == 1


async def test_http10_keeps_alive_only_when_asked(make_env: MakeEnv) -> None:
    env = await make_env()
    reader, writer = await connect(env)
    writer.write(post(f"{BASE}/result", version="1.0", extra="Connection: keep-alive\r\n"))
    answer = await read_response(reader)
    assert (answer.status, answer.headers["connection"]) == (200, "keep-alive")
    writer.write(post(f"{BASE}/result", version="1.0"))
    answer = await read_response(reader)
    assert (answer.status, answer.headers["connection"]) == (200, "close")
    assert await reader.read() == b""  # closed
    assert site(env).served == 2


async def test_connection_close_is_honoured(make_env: MakeEnv) -> None:
    env = await make_env()
    reader, writer = await connect(env)
    writer.write(post(f"{BASE}/result", extra="Connection: close\r\n") + post(f"{BASE}/result"))
    answer = await read_response(reader)
    assert (answer.status, answer.headers["connection"]) == (200, "close")
    assert await reader.read() == b""  # the second request is not answered
    assert env.callbacks("result", 200) == 1


@pytest.mark.parametrize(
    "bad",
    [
        b"POST /report/x/y/result HTTP/1.1\r\nHost: bjc\r\n"
        + b"X-Big: "
        + b"a" * MAX_HEAD
        + b"\r\n\r\n",
        b"POST /report/x/y/result HTTP/1.1 trailing junk\r\n\r\n",
        b"\x16\x03\x01 not http\r\n\r\n",
    ],
    ids=["head-too-large", "malformed-request-line", "not-http"],
)
async def test_a_malformed_request_after_a_result_is_400_and_closes(
    make_env: MakeEnv, bad: bytes
) -> None:
    env = await make_env()
    reader, writer = await connect(env)
    writer.write(post(f"{BASE}/result") + bad)
    assert (await read_response(reader)).status == 200
    answer = await read_response(reader)
    assert answer.status == 400 and answer.headers["connection"] == "close"
    assert answer.body.startswith(b"malformed request: ")
    assert await reader.read() == b""
    assert site(env).served == 1
    assert env.callbacks("result", 400) == 0  # not a callback: not counted


async def test_a_malformed_first_request_is_aiohttp_s_400(make_env: MakeEnv) -> None:
    env = await make_env()
    reader, writer = await connect(env)
    writer.write(b"POST /report/x/y/result HTTP/1.1 trailing junk\r\n\r\n")
    answer = await read_response(reader)
    assert answer.status == 400
    assert await reader.read() == b""
    assert site(env).served == 0


async def test_a_body_over_the_cap_is_413_without_reading_it(make_env: MakeEnv) -> None:
    env = await make_env(max_upload_size=1024)
    reader, writer = await connect(env)
    writer.write(
        f"POST {BASE}/result HTTP/1.1\r\nHost: bjc\r\nContent-Length: 5000000\r\n\r\n".encode()
    )
    answer = await read_response(reader)  # no body byte was sent
    assert (answer.status, answer.headers["connection"]) == (413, "close")
    assert await reader.read() == b""
    assert env.callbacks("result", 413) == 1
    assert site(env).served == 1
    assert f"{NODE}.json" not in stored(env.root / EID)


async def test_a_client_that_disconnects_mid_body_is_counted_499_and_writes_nothing(
    make_env: MakeEnv,
) -> None:
    env = await make_env()
    _reader, writer = await connect(env)
    writer.write(post(f"{BASE}/result")[:-5])
    await writer.drain()
    await env.target.fenced.wait()  # admitted: waiting for the rest of the body
    writer.close()
    await writer.wait_closed()
    runner = env.client.server.runner
    assert runner is not None
    await runner.cleanup()  # waits for every request the fast path is answering
    assert env.callbacks("result", 499) == 1
    assert stored(env.root / EID) == {}
    assert env.target.results == []
    assert env.callbacks("result", 200) == 0


async def test_shutdown_closes_idle_connections_and_answers_requests_in_flight(
    make_env: MakeEnv,
) -> None:
    env = await make_env()
    idle_reader, idle_writer = await connect(env)
    idle_writer.write(post(f"{BASE}/result"))
    assert (await read_response(idle_reader)).status == 200  # now idle, kept alive
    env.target.fenced.clear()
    busy_reader, busy_writer = await connect(env)
    busy_writer.write(post(f"{BASE}/result")[:-5])  # in flight: the body is not complete
    await busy_writer.drain()
    await env.target.fenced.wait()
    runner = env.client.server.runner
    assert runner is not None
    cleanup = asyncio.create_task(runner.cleanup())
    assert await idle_reader.read() == b""  # the idle connection is closed at once
    busy_writer.write(post(f"{BASE}/result")[-5:])
    answer = await read_response(busy_reader)
    assert (answer.status, answer.headers["connection"]) == (200, "close")
    assert await busy_reader.read() == b""
    await cleanup
    assert env.callbacks("result", 200) == 2


class BatchedStore(ReportStore):
    """The real store, recording which results each `write_results_now` appended."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.appends: list[list[str]] = []

    def write_results_now(
        self, execution_id: str, results: Sequence[tuple[str, int, bytes]]
    ) -> None:
        super().write_results_now(execution_id, results)
        self.appends.append([node for node, _, _ in results])


async def batched_env(make_env: MakeEnv, **options: Any) -> tuple[Env, BatchedStore]:
    env = await make_env(store_type=BatchedStore, **options)
    store = env.client.server.app[STORE]
    assert isinstance(store, BatchedStore)
    return env, store


async def post_at_once(env: Env, requests: list[bytes]) -> list[Response]:
    """Each request on a connection of its own, all written before the server's loop
    runs again (client and server share the loop): they arrive in one iteration."""
    connections = [await connect(env) for _ in requests]
    for (_, writer), request in zip(connections, requests, strict=True):
        writer.write(request)
    answers = [await read_response(reader) for reader, _ in connections]
    for _, writer in connections:
        writer.close()
    return answers


async def test_whole_results_of_one_loop_iteration_share_one_log_append(
    make_env: MakeEnv,
) -> None:
    env, store = await batched_env(make_env)
    nodes = [f"node-{i}" for i in range(5)]
    env.target.allowed |= {(node, EID) for node in nodes}
    bodies = {
        node: json.dumps({"test": [{"value": float(i)}]}).encode() for i, node in enumerate(nodes)
    }
    answers = await post_at_once(env, [post(f"/report/{n}/{EID}/result", bodies[n]) for n in nodes])
    assert [(a.status, a.body) for a in answers] == [(200, b"")] * 5
    assert sorted(node for append in store.appends for node in append) == nodes
    assert max(len(append) for append in store.appends) > 1  # not one append per result
    files = stored(env.root / EID)
    assert {node: files[f"{node}.json"] for node in nodes} == bodies
    assert sorted(env.target.results) == [(node, EID) for node in nodes]
    assert env.callbacks("result", 200) == 5
    assert site(env).served == 5


async def test_posts_answered_together_each_get_their_own_answer(make_env: MakeEnv) -> None:
    env, store = await batched_env(make_env)
    env.target.allowed |= {("node-b", EID), ("node-c", EID)}
    env.target.attempts["node-c"] = 2  # node-c's first attempt was given up on
    answers = await post_at_once(
        env,
        [
            post(f"/report/node-b/{EID}/result"),  # 200
            post(f"/report/node-c/{EID}/result"),  # 409: stale attempt
            post(f"/report/unknown/{EID}/result"),  # 406
            post(f"{BASE}/result", b"{not json"),  # 400
        ],
    )
    assert [a.status for a in answers] == [200, 409, 406, 400]
    assert answers[1].body.startswith(b"stale attempt: ")
    assert store.appends == [["node-b"]]
    assert set(stored(env.root / EID)) == {"node-b.json"}
    assert [env.callbacks("result", code) for code in (200, 409, 406, 400)] == [1, 1, 1, 1]


async def test_with_fsync_durability_each_result_waits_for_its_synced_append(
    make_env: MakeEnv,
) -> None:
    env, store = await batched_env(make_env)
    store.fsync = True  # what `durability: fsync` sets
    env.target.allowed.add(("node-b", EID))
    answers = await post_at_once(
        env, [post(f"{BASE}/result"), post(f"/report/node-b/{EID}/result")]
    )
    assert [a.status for a in answers] == [200, 200]
    assert store.appends == []  # answered by `result`, through the synced group commit
    assert set(stored(env.root / EID)) == {f"{NODE}.json", "node-b.json"}


async def test_a_dev_mode_post_for_an_unknown_execution_is_answered_after_its_directory_is_made(
    make_env: MakeEnv,
) -> None:
    env, store = await batched_env(make_env, dev_mode=True)
    answers = await post_at_once(
        env, [post(f"/report/{NODE}/202401011300/result"), post(f"{BASE}/result")]
    )
    assert [a.status for a in answers] == [200, 200]
    assert store.appends == [[NODE]]  # the known execution's, answered together
    assert stored(env.root / "202401011300")[f"{NODE}.json"] == BODY


async def test_after_pipelined_posts_a_connection_is_answered_together_again(
    make_env: MakeEnv,
) -> None:
    env, store = await batched_env(make_env)
    reader, writer = await connect(env)
    writer.write(post(f"{BASE}/result") * 3)  # the first answered at once, the rest queued
    assert [(await read_response(reader)).status for _ in range(3)] == [200] * 3
    appends = len(store.appends)
    writer.write(post(f"{BASE}/result"))  # alone again, on an idle connection
    assert (await read_response(reader)).status == 200
    assert store.appends[appends:] == [[NODE]]
    writer.close()
    assert site(env).served == 4
