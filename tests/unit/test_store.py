"""ReportStore: layout, latest link, pruning, atomic writes and name checks."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from pathlib import Path

import pytest

from bjc.reports import store as store_module
from bjc.reports.resultlog import RESULTS_LOG
from bjc.reports.store import (
    LATEST,
    STATE_FILE,
    ReportStore,
    UploadTooLarge,
    WriteFailed,
    check_name,
)

E1, E2, E3 = "202401011200", "202401011300", "202401021200"


def files_under(root: Path) -> set[str]:
    return {
        str(Path(d, f).relative_to(root))
        for d, _, fs in os.walk(root, followlinks=False)
        for f in fs
    }


async def test_create_execution_links_latest_relatively(tmp_path: Path) -> None:
    store = ReportStore(tmp_path / "reports")
    await store.create_execution(E1)
    await store.create_execution(E2)
    link = tmp_path / "reports" / LATEST
    assert link.is_symlink()
    assert os.readlink(link) == E2  # relative, survives moving the directory
    assert store.latest() == E2
    await store.create_execution(E1, link_latest=False)
    assert store.latest() == E2
    # No temporary links left behind.
    assert sorted(os.listdir(tmp_path / "reports")) == [E1, E2, LATEST]


async def test_list_executions_only_id_shaped_sorted(tmp_path: Path) -> None:
    store = ReportStore(tmp_path)
    for eid in (E3, E1, "202401011200-2", E2):
        await store.create_execution(eid)
    (tmp_path / "notes").mkdir()
    (tmp_path / "202401011201").write_text("a file, not a directory")
    assert await store.list_executions() == [E1, E2, E3]  # "-2": not an id bjc makes


async def test_list_executions_of_missing_root(tmp_path: Path) -> None:
    assert await ReportStore(tmp_path / "missing").list_executions() == []


@pytest.mark.parametrize(("keep", "expected_left"), [(2, [E2, E3]), (1, [E3]), (5, [E1, E2, E3])])
async def test_prune_removes_oldest(tmp_path: Path, keep: int, expected_left: list[str]) -> None:
    store = ReportStore(tmp_path)
    for eid in (E1, E2, E3):
        await store.create_execution(eid)
        await store.write_result(eid, "node-a", b"{}")
    await store.close()  # the logged results become files
    removed = await store.prune(keep)
    assert removed == [e for e in (E1, E2, E3) if e not in expected_left]
    assert await store.list_executions() == expected_left
    assert store.latest() == E3
    assert (tmp_path / LATEST / "node-a.json").read_bytes() == b"{}"


async def test_prune_keeps_at_least_one(tmp_path: Path) -> None:
    store = ReportStore(tmp_path)
    await store.create_execution(E1)
    with pytest.raises(ValueError, match="at least 1"):
        await store.prune(0)
    assert await store.list_executions() == [E1]


async def test_result_upload_log_and_state_layout(tmp_path: Path) -> None:
    store = ReportStore(tmp_path)
    await store.create_execution(E1)
    await store.write_result(E1, "node-a", b'{"test": []}')
    await store.write_log(E1, "node-a", "job", b"log line\n")
    await store.write_state(E1, b'{"state": 1}')
    async with store.upload(E1, "node-a", "report.txt") as sink:
        await sink.write(b"hello ")
        await sink.write(b"world")
    assert files_under(tmp_path) == {
        f"{E1}/node-a.json",  # written from the results log before the state snapshot
        f"{E1}/{RESULTS_LOG}",
        f"{E1}/node-a-container-job.log",
        f"{E1}/{STATE_FILE}",
        f"{E1}/node-a-report.txt",
    }
    assert (tmp_path / E1 / RESULTS_LOG).stat().st_size == 0  # emptied once written
    assert (tmp_path / E1 / "node-a-report.txt").read_bytes() == b"hello world"
    assert await store.read_state(E1) == (b'{"state": 1}', None)
    assert await store.read_state(E2) is None


async def test_state_journal_appends_and_is_folded_by_a_snapshot(tmp_path: Path) -> None:
    store = ReportStore(tmp_path)
    await store.create_execution(E1)
    await store.write_state(E1, b"snapshot-1")
    await store.append_journal(E1, b"change-1\n")
    await store.append_journal(E1, b"change-2\n")
    assert await store.read_state(E1) == (b"snapshot-1", b"change-1\nchange-2\n")
    await store.write_state(E1, b"snapshot-2")
    assert await store.read_state(E1) == (b"snapshot-2", None)
    with pytest.raises(FileNotFoundError):
        await store.append_journal(E2, b"x\n")


async def test_write_replaces_atomically_and_leaves_no_temp(tmp_path: Path) -> None:
    store = ReportStore(tmp_path)
    await store.create_execution(E1)
    target = tmp_path / E1 / "node-a.json"
    await store.write_result(E1, "node-a", b"first")
    await store.materialize(E1)
    inode = target.stat().st_ino
    await store.write_result(E1, "node-a", b"second")
    await store.materialize(E1)
    assert target.read_bytes() == b"second"
    assert target.stat().st_ino != inode  # a new file renamed over the old one
    assert sorted(os.listdir(tmp_path / E1)) == [RESULTS_LOG, "node-a.json"]


async def test_concurrent_results_all_land_with_their_own_bodies(tmp_path: Path) -> None:
    store = ReportStore(tmp_path)
    await store.create_execution(E1)
    nodes = [f"node-{i}" for i in range(300)]
    await asyncio.gather(*(store.write_result(E1, n, n.encode()) for n in nodes))
    await store.close()
    assert {n: (tmp_path / E1 / f"{n}.json").read_bytes() for n in nodes} == {
        n: n.encode() for n in nodes
    }
    assert sorted(os.listdir(tmp_path / E1)) == sorted([RESULTS_LOG] + [f"{n}.json" for n in nodes])


def _writer_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "bjc-writer"}


async def test_writer_thread_ends_when_idle_and_a_later_write_starts_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    others = _writer_threads()  # of earlier tests' stores
    monkeypatch.setattr(store_module._Writer, "_IDLE_S", 0.01)
    store = ReportStore(tmp_path)
    await store.create_execution(E1)
    await store.write_state(E1, b"first")
    for thread in _writer_threads() - others:
        await asyncio.to_thread(thread.join)  # it ends by itself once idle
    assert _writer_threads() - others == set()
    await store.write_state(E1, b"second")
    assert await store.read_state(E1) == (b"second", None)


async def test_large_upload_goes_through_temp_file(tmp_path: Path) -> None:
    store = ReportStore(tmp_path)
    await store.create_execution(E1)
    chunk = os.urandom(512 * 1024)
    async with store.upload(E1, "n", "big.bin") as sink:
        for _ in range(5):
            await sink.write(chunk)
        # Before the context ends the data sits in a hidden temporary file only.
        assert not (tmp_path / E1 / "n-big.bin").exists()
        assert [p.startswith(".bjc-tmp-") for p in os.listdir(tmp_path / E1)] == [True]
    assert (tmp_path / E1 / "n-big.bin").read_bytes() == chunk * 5
    assert os.listdir(tmp_path / E1) == ["n-big.bin"]


async def test_oversize_upload_removed_and_old_file_kept(tmp_path: Path) -> None:
    store = ReportStore(tmp_path)
    await store.create_execution(E1)
    await store.write_file(E1, "n-data.bin", b"old")
    with pytest.raises(UploadTooLarge):
        async with store.upload(E1, "n", "data.bin", max_size=2 * 1024 * 1024) as sink:
            for _ in range(3):
                await sink.write(os.urandom(1024 * 1024))
    assert os.listdir(tmp_path / E1) == ["n-data.bin"]
    assert (tmp_path / E1 / "n-data.bin").read_bytes() == b"old"


async def test_upload_error_in_body_discards(tmp_path: Path) -> None:
    store = ReportStore(tmp_path)
    await store.create_execution(E1)
    with pytest.raises(RuntimeError):
        async with store.upload(E1, "n", "x") as sink:
            await sink.write(b"partial")
            raise RuntimeError("client went away")
    assert os.listdir(tmp_path / E1) == []


async def test_write_to_missing_execution_fails(tmp_path: Path) -> None:
    store = ReportStore(tmp_path)
    with pytest.raises(FileNotFoundError):
        await store.write_result(E1, "n", b"{}")
    with pytest.raises(FileNotFoundError):
        async with store.upload(E1, "n", "x") as sink:
            await sink.write(b"x")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "..",
        "a/b",
        "/etc/passwd",
        "../x",
        "a\\b",
        "..\\x",
        "a\x00b",
        "a\nb",
        "a%2Fb",
        "a%2fb",
        "%2e%2e",
        "a%252Fb",
        "..%5Cx",
        "x" * 256,
    ],
)
def test_check_name_refuses(name: str) -> None:
    with pytest.raises(ValueError):
        check_name(name)


def test_check_name_names_what_it_checks_each_time() -> None:
    # the verdict on a name is cached; the message still names what was checked
    for what in ("node", "file name"):
        with pytest.raises(ValueError, match=f"^{what} 'a/b' must not contain a path separator"):
            check_name("a/b", what)
    with pytest.raises(ValueError, match=r"^execution ID is empty"):
        check_name("", "execution ID")


@pytest.mark.parametrize("name", ["report.txt", "a..b", "...", ".hidden", "x%41y", "日本.txt"])
def test_check_name_accepts(name: str) -> None:
    assert check_name(name) == name


async def test_unsafe_names_never_touch_disk(tmp_path: Path) -> None:
    root = tmp_path / "reports"
    store = ReportStore(root)
    await store.create_execution(E1)
    for node, name in [("n", "../../escape"), ("..", "x"), ("n", "/tmp/abs"), ("a/b", "c")]:
        with pytest.raises(ValueError):
            async with store.upload(E1, node, name) as sink:
                await sink.write(b"x")
    for node in ("..", "a/b", "/abs", "a\\b"):
        with pytest.raises(ValueError):
            await store.write_result(E1, node, b"{}")
    for filename in ("../x", "/tmp/abs", ".."):
        with pytest.raises(ValueError):
            await store.write_file(E1, filename, b"x")
    with pytest.raises(ValueError):
        await store.write_state("../x", b"{}")
    assert files_under(tmp_path) == set()


async def test_planted_symlink_is_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "reports"
    store = ReportStore(root)
    await store.create_execution(E1)
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    (root / E1 / "n-x").symlink_to(outside)
    with pytest.raises(ValueError):
        async with store.upload(E1, "n", "x") as sink:
            await sink.write(b"overwrite")
    assert outside.read_text() == "secret"


@pytest.mark.parametrize(
    ("code", "no_space"),
    [("ENOSPC", True), ("EDQUOT", True), ("EROFS", False), ("EIO", False), ("ENOTDIR", False)],
)
def test_write_failed_tells_a_full_file_system_from_the_rest(code: str, no_space: bool) -> None:
    """Full (507) or not (503): the callback API answers by `no_space`."""
    number = getattr(errno, code)
    failed = WriteFailed(number, os.strerror(number), "/reports/x.json")
    assert (failed.no_space, failed.code, failed.errno) == (no_space, code, number)
