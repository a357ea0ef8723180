"""Callback API file uploads (`.../file`, and bjc's upload safety) over a real aiohttp server."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from bjc.config.settings import Config
from bjc.kube.events import EventRequest
from bjc.reports.execution import Stale
from bjc.reports.metrics import Metrics
from bjc.reports.store import ReportStore
from bjc.web.callback import make_callback_app
from tests.served import Served

NODE, EID = "node-a", "202401011200"
URL = f"/report/{NODE}/{EID}/file"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"


class Target:
    def execution_allowed(self, node: str, execution_id: str) -> bool:
        return (node, execution_id) == (NODE, EID)

    def nodes_of(self, execution_id: str) -> set[str] | None:
        return {NODE} if execution_id == EID else None

    def token_valid(self, node: str, execution_id: str, token: str, attempt: int) -> bool:
        return False

    def stale(self, node: str, execution_id: str, attempt: int) -> Stale | None:
        return None

    def result_received(self, node: str, execution_id: str) -> None:
        return None

    async def create_event(self, node: str, execution_id: str, event: EventRequest) -> None:
        return None


class Env:
    def __init__(self, client: TestClient, tmp: Path) -> None:
        self.client = client
        self.tmp = tmp
        self.dir = tmp / "reports" / EID

    def saved(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in self.dir.iterdir()}

    def all_files(self) -> set[str]:
        """Every file anywhere under the test's tmp directory (symlinks not followed)."""
        return {
            str(Path(d, f).relative_to(self.tmp))
            for d, _, files in os.walk(self.tmp, followlinks=False)
            for f in files
        }


MakeEnv = Callable[..., Awaitable[Env]]


@pytest.fixture
def make_env(tmp_path: Path, aiohttp_client: Any) -> MakeEnv:
    async def make(**overrides: Any) -> Env:
        root = tmp_path / "reports"
        config = Config(name="bjc", report_directory=str(root), **overrides)
        store = ReportStore(root)
        await store.create_execution(EID)
        app = make_callback_app(config, store, Metrics(config), Target(), dev_mode=False)
        return Env(await aiohttp_client(Served(app)), tmp_path)

    return make


# ------------------------------------------------------------------------ naming
async def test_raw_upload_named_by_query(make_env: MakeEnv) -> None:
    env = await make_env()
    resp = await env.client.post(f"{URL}?name=report.txt", data=b"hello")
    assert resp.status == 200
    assert (await resp.text()).strip() == f"{NODE}-report.txt"
    assert env.saved() == {f"{NODE}-report.txt": b"hello"}


async def test_query_name_wins_over_content_disposition(make_env: MakeEnv) -> None:
    env = await make_env()
    headers = {"Content-Disposition": 'attachment; filename="other.txt"'}
    resp = await env.client.post(f"{URL}?name=first.txt", data=b"x", headers=headers)
    assert resp.status == 200
    assert list(env.saved()) == [f"{NODE}-first.txt"]


@pytest.mark.parametrize(
    ("disposition", "expected"),
    [
        ('attachment; filename="report.html"', "report.html"),
        ("attachment; filename=plain.log", "plain.log"),
        ("form-data; name=\"f\"; filename*=UTF-8''r%C3%A9sum%C3%A9.txt", "résumé.txt"),
    ],
)
async def test_raw_upload_named_by_content_disposition(
    make_env: MakeEnv, disposition: str, expected: str
) -> None:
    env = await make_env()
    resp = await env.client.post(URL, data=b"<html/>", headers={"Content-Disposition": disposition})
    assert resp.status == 200
    assert env.saved() == {f"{NODE}-{expected}": b"<html/>"}


@pytest.mark.parametrize(
    ("content_type", "extension"),
    [
        ("text/plain", ".txt"),
        ("text/plain; charset=utf-8", ".txt"),
        ("application/json", ".json"),
        ("image/png", ".png"),
        ("application/x-bjc-unknown", ".file"),
        (None, ".file"),
    ],
)
async def test_raw_upload_without_name_gets_uuid_and_extension(
    make_env: MakeEnv, content_type: str | None, extension: str
) -> None:
    env = await make_env()
    if content_type is None:
        resp = await env.client.post(URL, data=b"data", skip_auto_headers=["Content-Type"])
    else:
        resp = await env.client.post(URL, data=b"data", headers={"Content-Type": content_type})
    assert resp.status == 200
    [name] = env.saved()
    assert re.fullmatch(f"{NODE}-{UUID}{re.escape(extension)}", name), name
    assert (await resp.text()).strip() == name


async def test_multipart_several_files(make_env: MakeEnv) -> None:
    env = await make_env()
    form = aiohttp.FormData()
    form.add_field("comment", "a plain form field, not a file")
    form.add_field("file", b"first file", filename="a.txt", content_type="text/plain")
    expected_b = os.urandom(300_000)
    form.add_field("file", expected_b, filename="b.bin")
    form.add_field("other", b'{"k": 1}', filename="c.json", content_type="application/json")
    resp = await env.client.post(URL, data=form)
    assert resp.status == 200
    assert env.saved() == {
        f"{NODE}-a.txt": b"first file",
        f"{NODE}-b.bin": expected_b,
        f"{NODE}-c.json": b'{"k": 1}',
    }
    assert sorted((await resp.text()).split()) == sorted(env.saved())


async def test_multipart_without_file_is_400(make_env: MakeEnv) -> None:
    env = await make_env()
    with aiohttp.MultipartWriter("form-data") as form:
        part = form.append("value")
        part.set_content_disposition("form-data", name="field")
    resp = await env.client.post(URL, data=form)
    assert resp.status == 400
    assert "no file" in await resp.text()
    assert env.saved() == {}


async def test_100_concurrent_uploads(make_env: MakeEnv) -> None:
    env = await make_env()
    contents = {f"file-{i:03d}.bin": os.urandom(1000 + i * 997) for i in range(100)}

    async def upload(name: str, data: bytes) -> int:
        resp = await env.client.post(f"{URL}?name={name}", data=data)
        return resp.status

    statuses = await asyncio.gather(*(upload(n, d) for n, d in contents.items()))
    assert statuses == [200] * 100
    assert env.saved() == {f"{NODE}-{n}": d for n, d in contents.items()}


async def test_same_name_uploaded_concurrently_is_one_whole_file(make_env: MakeEnv) -> None:
    env = await make_env()
    bodies = [bytes([i]) * 200_000 for i in range(20)]
    statuses = await asyncio.gather(
        *(env.client.post(f"{URL}?name=same.bin", data=b) for b in bodies)
    )
    assert [r.status for r in statuses] == [200] * 20
    assert env.saved()[f"{NODE}-same.bin"] in bodies  # one complete body, never a mix
    assert list(env.saved()) == [f"{NODE}-same.bin"]  # no temporary files left


# ----------------------------------------------------------------------- safety
UNSAFE_QUERY_NAMES = [
    "a/b",
    "../escape.txt",
    "/../../../escape.txt",
    "..",
    "/etc/passwd",
    "a%2Fb",  # decodes to a/b in the query
    "..%2F..%2Fescape.txt",
    "a%252F..%252Fescape",  # double encoded
    "a\\b",
    "..\\..\\escape.txt",
    "a%00b",  # NUL
    "x" * 300,
]


@pytest.mark.parametrize("name", UNSAFE_QUERY_NAMES)
async def test_unsafe_query_names_are_400(make_env: MakeEnv, name: str) -> None:
    env = await make_env()
    before = env.all_files()
    # Written into the query as is: `%2F` and `%00` reach the server percent-encoded.
    resp = await env.client.post(f"{URL}?name={name}", data=b"payload")
    assert resp.status == 400
    assert (await resp.text()).startswith("invalid upload")
    assert env.all_files() == before == set()


@pytest.mark.parametrize(
    "disposition",
    [
        'attachment; filename="../../escape.txt"',
        'attachment; filename="/tmp/escape.txt"',
        'attachment; filename="..\\\\escape.txt"',
        "attachment; filename*=UTF-8''..%2F..%2Fescape.txt",
        'attachment; filename=".."',
    ],
)
async def test_unsafe_content_disposition_names_are_400(
    make_env: MakeEnv, disposition: str
) -> None:
    env = await make_env()
    resp = await env.client.post(URL, data=b"x", headers={"Content-Disposition": disposition})
    assert resp.status == 400
    assert env.all_files() == set()


@pytest.mark.parametrize("filename", ["../../escape.txt", "/abs.txt", "a\\b", "..", "a%2Fb"])
async def test_unsafe_multipart_names_are_400_and_nothing_saved(
    make_env: MakeEnv, filename: str
) -> None:
    env = await make_env()
    form = aiohttp.FormData()
    form.add_field("file", b"good", filename="good.txt")
    form.add_field("file", b"evil", filename=filename)
    resp = await env.client.post(URL, data=form)
    assert resp.status == 400
    assert env.all_files() == set()  # the good part was staged, then discarded


# --------------------------------------------------------------------------- caps
async def test_body_over_cap_with_length_is_413(make_env: MakeEnv) -> None:
    env = await make_env(max_upload_size=10_000)
    resp = await env.client.post(f"{URL}?name=big.bin", data=os.urandom(10_001))
    assert resp.status == 413
    assert (await resp.text()).startswith("request body exceeds the maximum upload size")
    assert env.all_files() == set()
    ok = await env.client.post(f"{URL}?name=fits.bin", data=os.urandom(10_000))
    assert ok.status == 200


async def test_chunked_body_over_cap_is_413_and_partial_removed(make_env: MakeEnv) -> None:
    env = await make_env(max_upload_size=3 * 1024 * 1024)
    (env.dir / f"{NODE}-big.bin").write_bytes(b"previous")

    async def body() -> AsyncIterator[bytes]:
        for _ in range(8):  # 4 MiB in 512 KiB chunks, no Content-Length
            yield os.urandom(512 * 1024)

    resp = await env.client.post(f"{URL}?name=big.bin", data=body())
    assert resp.status == 413
    assert env.saved() == {f"{NODE}-big.bin": b"previous"}
    assert env.all_files() == {f"reports/{EID}/{NODE}-big.bin"}


async def test_multipart_over_cap_is_413_and_nothing_saved(make_env: MakeEnv) -> None:
    env = await make_env(max_upload_size=2 * 1024 * 1024)
    form = aiohttp.FormData()
    form.add_field("file", b"small", filename="small.txt")
    form.add_field("file", os.urandom(3 * 1024 * 1024), filename="large.bin")
    resp = await env.client.post(URL, data=form, chunked=True)
    assert resp.status == 413
    assert env.all_files() == set()
