"""The results log: acknowledged from one append, torn tails cut, files materialized.

What these prove (docs/executions.md, "No lost data"): a result is in the log when
`write_result` returns, concurrent results share a write (and with `durability:
fsync`, an fdatasync that happens before any of them returns); a log whose last record
was cut mid-write loses only that record and is repaired before anything is appended
behind it, including after a real SIGKILL during writes; the newest result of a node
becomes `<node>.json` (one file for repeated results), always before a state snapshot;
and the file server answers a result from the log before it is a file.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from bjc.reports import materializer, resultlog
from bjc.reports.resultlog import RESULTS_LOG, encode_record, scan
from bjc.reports.store import STATE_FILE, ReportStore
from bjc.web.files import make_file_app

E1 = "202401011200"


async def _store(root: Path) -> ReportStore:
    store = ReportStore(root)
    await store.create_execution(E1)
    return store


def test_records_round_trip_and_scanning_stops_at_any_cut() -> None:
    records = [("node-a", 0, b'{"a": []}'), ("nöde-b", 3, b""), ("node-a", 1, b"x" * 70_000)]
    data = b"".join(encode_record(*r) for r in records)
    assert scan(data) == ([resultlog.Record(*r) for r in records], len(data))
    whole = len(data) - len(encode_record(*records[-1]))
    for cut in range(whole + 1, len(data), 997):  # anywhere inside the last record
        assert scan(data[:cut]) == ([resultlog.Record(*r) for r in records[:2]], whole)
    flipped = bytearray(data)
    flipped[-1] ^= 1  # a damaged body fails its checksum
    assert scan(bytes(flipped))[1] == whole


async def test_a_torn_last_record_loses_only_unacknowledged_data_and_is_repaired(
    tmp_path: Path,
) -> None:
    torn = encode_record("node-c", 0, b'{"never": "acknowledged"}')
    for cut in range(1, len(torn)):
        root = tmp_path / str(cut)
        store = await _store(root)
        await store.write_result(E1, "node-a", b"a1")
        await store.write_result(E1, "node-b", b"b1")
        await store.write_result(E1, "node-a", b"a2")  # acknowledged: all three
        log = root / E1 / RESULTS_LOG
        whole = log.stat().st_size
        # the process died while writing the next record
        log.write_bytes(log.read_bytes() + torn[:cut])

        restarted = ReportStore(root)  # a new process: nothing in memory
        expected = {"node-a": b"a2", "node-b": b"b1"}
        assert await restarted.read_results(E1, {"node-a", "node-b", "node-c"}) == expected
        await restarted.recover_logs([E1])  # start-up: the torn tail is cut
        assert log.stat().st_size == whole
        await restarted.write_result(E1, "node-c", b"c2")  # readable behind the repair
        assert resultlog.read(str(log))["node-c"] == b"c2"
        await restarted.close()  # and every result became its file
        assert {n: (root / E1 / f"{n}.json").read_bytes() for n in expected} == expected
        assert (root / E1 / "node-c.json").read_bytes() == b"c2"


_WRITER = """
import asyncio, sys
from bjc.reports.store import ReportStore

async def main(root, eid):
    store = ReportStore(root)
    await store.create_execution(eid)
    body = b"x" * 200_000
    for i in range(100_000):
        await store.write_result(eid, f"node-{i % 7}", str(i).encode() + body)
        print(i, flush=True)  # acknowledged

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_sigkill_during_appends_loses_no_acknowledged_result(tmp_path: Path) -> None:
    """A real kill -9 while results of 200 kB are being appended (page by page)."""
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    for round_ in range(3):
        root = tmp_path / str(round_)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _WRITER, str(root), E1, stdout=subprocess.PIPE, env=env
        )
        assert proc.stdout is not None
        acknowledged = -1
        while acknowledged < 20 + 15 * round_:
            acknowledged = int(await proc.stdout.readline())
        proc.send_signal(signal.SIGKILL)
        rest = await proc.stdout.read()  # acknowledged after we decided to kill
        await proc.wait()
        assert proc.returncode == -signal.SIGKILL
        if rest.strip():
            acknowledged = int(rest.split()[-1])
        store = ReportStore(root)
        results = await store.read_results(E1, {f"node-{i}" for i in range(7)})
        # one result at a time: the last one acknowledged is its node's newest
        newest = results[f"node-{acknowledged % 7}"]
        assert newest[: newest.index(b"x")] == str(acknowledged).encode()
        await store.recover_logs([E1])
        _, end = scan((root / E1 / RESULTS_LOG).read_bytes())
        assert end == (root / E1 / RESULTS_LOG).stat().st_size  # no torn tail left
        await store.close()


async def test_concurrent_results_share_one_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fifty results posted in one event-loop iteration: one write, fifty answers."""
    store = await _store(tmp_path)
    batches: list[int] = []
    append = store._append_sync

    def counting(execution_id: str, data: bytes, sync: bool) -> None:
        batches.append(len(scan(data)[0]))
        append(execution_id, data, sync)

    monkeypatch.setattr(store._log, "_write", counting)
    await asyncio.gather(*(store.write_result(E1, f"node-{i}", b"{}") for i in range(50)))
    assert batches == [50]  # one write for the fifty
    assert len(resultlog.read(str(tmp_path / E1 / RESULTS_LOG))) == 50


async def test_fsync_durability_syncs_each_batch_before_its_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await _store(tmp_path)
    store.fsync = True
    log = tmp_path / E1 / RESULTS_LOG
    syncs = 0
    synced: set[str] = set()  # the nodes whose results were in the log at an fdatasync
    fdatasync = os.fdatasync

    def spy(fd: int) -> None:
        nonlocal syncs
        fdatasync(fd)
        if os.path.samefile(f"/proc/self/fd/{fd}", log):
            syncs += 1
            synced.update(resultlog.read(str(log)))

    monkeypatch.setattr(os, "fdatasync", spy)

    async def post(i: int) -> None:
        await store.write_result(E1, f"node-{i}", b"{}")
        assert f"node-{i}" in synced  # synced before the answer

    await asyncio.gather(*(post(i) for i in range(40)))
    assert 1 <= syncs < 40  # group commit: fewer syncs than results
    await store.close()  # files synced before the log is emptied
    assert log.stat().st_size == 0


async def test_repeated_results_become_one_file_each_before_a_state_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await _store(tmp_path)
    written: list[str] = []
    write = store._write_sync

    def spy(execution_id: str, filename: str, data: bytes, sync: bool = False) -> str:
        written.append(filename)
        return write(execution_id, filename, data, sync)

    monkeypatch.setattr(store, "_write_sync", spy)
    for i in range(5):
        await store.write_result(E1, "node-a", json.dumps({"i": i}).encode())
        await store.write_result(E1, "node-b", b"b")
    assert written == []  # nothing but the log yet
    await store.write_state(E1, b'{"finished": 1}')
    assert written == ["node-a.json", "node-b.json", STATE_FILE]  # results first, once each
    assert (tmp_path / E1 / "node-a.json").read_bytes() == b'{"i": 4}'
    assert (tmp_path / E1 / RESULTS_LOG).stat().st_size == 0


async def test_the_materializer_writes_files_by_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await _store(tmp_path)
    rounds = store._materializer._materialize_all
    done = asyncio.Event()

    async def round_() -> None:
        await rounds()
        done.set()

    monkeypatch.setattr(store._materializer, "_materialize_all", round_)
    monkeypatch.setattr(materializer, "MATERIALIZE_DELAY_S", 0.1)
    await store.write_result(E1, "node-a", b"first")
    await store.write_result(E1, "node-a", b"second")
    await asyncio.wait_for(done.wait(), 30)  # its timer fires by itself
    assert (tmp_path / E1 / "node-a.json").read_bytes() == b"second"
    assert (tmp_path / E1 / RESULTS_LOG).stat().st_size == 0


async def test_the_file_server_answers_a_result_from_the_log(tmp_path: Path) -> None:
    store = await _store(tmp_path)
    server = TestServer(make_file_app(tmp_path))
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            await store.write_result(E1, "node-a", b'{"v": 1}')
            for path in (f"/{E1}/node-a.json", "/latest/node-a.json"):
                async with http.get(server.make_url(path)) as r:
                    assert (r.status, await r.read()) == (200, b'{"v": 1}')
            assert not (tmp_path / E1 / "node-a.json").exists()
            async with http.get(server.make_url(f"/{E1}/")) as r:
                assert "node-a.json" in await r.text()  # listed too
            await store.close()
            async with http.get(server.make_url(f"/{E1}/node-a.json")) as r:
                assert (r.status, await r.read()) == (200, b'{"v": 1}')  # now the file
    finally:
        await server.close()


async def test_a_synced_append_never_waits_behind_the_materializer(tmp_path: Path) -> None:
    store = await _store(tmp_path)
    store.fsync = True
    release = threading.Event()
    busy = asyncio.ensure_future(store._writer.run(release.wait))  # the files' thread stuck
    try:
        await asyncio.wait_for(store.write_result(E1, "node-a", b"{}"), 30)
    finally:
        release.set()
        await busy
    assert resultlog.read(str(tmp_path / E1 / RESULTS_LOG)) == {"node-a": b"{}"}


async def test_a_log_left_behind_is_adopted_by_the_first_append(tmp_path: Path) -> None:
    """Without recover_logs (a DEV_MODE execution the history does not know), the first
    append of a new process still repairs the log and takes over what it holds."""
    first = await _store(tmp_path)
    await first.write_result(E1, "node-a", b"a1")  # then the process is killed
    log = tmp_path / E1 / RESULTS_LOG
    log.write_bytes(log.read_bytes() + encode_record("node-x", 0, b"torn")[:9])
    second = ReportStore(tmp_path)
    await second.write_result(E1, "node-b", b"b1")
    await second.close()
    assert (tmp_path / E1 / "node-a.json").read_bytes() == b"a1"
    assert (tmp_path / E1 / "node-b.json").read_bytes() == b"b1"
    assert log.stat().st_size == 0  # every record is a file: emptied
