"""Report file server (port 8080) and the health probes, over real servers."""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
from pathlib import Path
from typing import Any

from aiohttp import web

from bjc.reports.store import ReportStore
from bjc.web import bound_port, serve
from bjc.web.files import UPLOAD_CSP, make_file_app
from bjc.web.health import CHECKS, make_health_app, report_directory_check, runner_check
from bjc.web.summary import PAGE_CSP

E1, E2 = "202401011200", "202401011300"


async def reports(tmp_path: Path) -> Path:
    root = tmp_path / "reports"
    store = ReportStore(root)
    for eid in (E1, E2):
        await store.create_execution(eid)
        await store.write_result(eid, "node-a", f'{{"run": "{eid}"}}'.encode())
    async with store.upload(E2, "node-a", "report.html") as sink:
        await sink.write(b"<h1>report</h1>")
    await store.close()  # the results are files now, not only in the results log
    return root


async def test_listing_and_latest(tmp_path: Path, aiohttp_client: Any) -> None:
    root = await reports(tmp_path)
    client = await aiohttp_client(make_file_app(root))

    index = await client.get("/")
    assert index.status == 200
    html = await index.text()
    for entry in (f"{E1}/", f"{E2}/", "latest/"):
        assert f">{entry}<" in html

    latest = await client.get("/latest/node-a.json")
    assert latest.status == 200
    assert await latest.text() == f'{{"run": "{E2}"}}'
    listing = await (await client.get("/latest/")).text()
    assert "node-a-report.html" in listing and "node-a.json" in listing
    old = await client.get(f"/{E1}/node-a.json")
    assert await old.text() == f'{{"run": "{E1}"}}'
    page = await client.get(f"/{E2}/node-a-report.html")
    assert page.content_type == "text/html"


async def test_read_only_and_confined(tmp_path: Path, aiohttp_client: Any) -> None:
    root = await reports(tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    (root / E1 / "escape").symlink_to(secret)
    (root / "escape-dir").symlink_to(tmp_path)
    client = await aiohttp_client(make_file_app(root))

    assert (await client.get(f"/{E1}/escape")).status == 404
    assert (await client.get("/escape-dir/secret.txt")).status == 404
    assert (await client.get("/../secret.txt")).status == 404
    assert (await client.get("/%2e%2e/secret.txt")).status == 404
    assert (await client.get("/missing.txt")).status == 404
    assert (await client.post(f"/{E1}/node-a.json", data=b"x")).status == 405
    assert (await client.put(f"/{E1}/new.txt", data=b"x")).status == 405
    assert (await client.delete(f"/{E1}/node-a.json")).status == 405
    assert (root / E1 / "node-a.json").exists()


async def test_hidden_files_are_never_served(tmp_path: Path, aiohttp_client: Any) -> None:
    root = await reports(tmp_path)
    await ReportStore(root).write_state(E2, b'{"nodes": {"node-a": {"token": "secret"}}}')
    await ReportStore(root).append_journal(E2, b'{"node": "node-a"}\n')
    client = await aiohttp_client(make_file_app(root))
    for path in (f"/{E2}/.bjc-execution.json", "/latest/.bjc-execution.journal",
                 f"/{E2}/%2Ebjc-execution.json", "/.hidden/x"):  # fmt: skip
        assert (await client.get(path)).status == 404, path
    assert (await client.get(f"/{E2}/node-a.json")).status == 200


async def test_hidden_names_are_not_listed_and_links_to_them_not_served(
    tmp_path: Path, aiohttp_client: Any
) -> None:
    root = await reports(tmp_path)
    store = ReportStore(root)
    await store.write_state(E2, b'{"nodes": {"node-a": {"token": "secret"}}}')
    (root / E2 / ".hidden-dir").mkdir()
    (root / E2 / ".hidden-dir" / "inside.txt").write_text("secret")
    (root / E2 / "state-link").symlink_to(".bjc-execution.json")
    (root / E2 / "dir-link").symlink_to(".hidden-dir")
    (root / E2 / "abs-link").symlink_to(root / E2 / ".bjc-execution.json")
    (root / E2 / "ok-link").symlink_to("node-a.json")  # stays inside, nothing hidden
    (root / E2 / "loop").symlink_to("loop")
    client = await aiohttp_client(make_file_app(root))

    for path in (f"/{E2}/state-link", f"/{E2}/abs-link", f"/{E2}/dir-link/inside.txt",
                 f"/{E2}/dir-link/", "/latest/state-link", f"/{E2}/loop"):  # fmt: skip
        resp = await client.get(path)
        assert resp.status == 404, path
        assert "secret" not in await resp.text()
    assert await (await client.get(f"/{E2}/ok-link")).text() == f'{{"run": "{E2}"}}'
    for listing in (f"/{E2}/", "/latest/", "/latest"):
        page = await (await client.get(listing)).text()
        assert "node-a.json" in page and "ok-link" in page, listing
        for hidden in (".bjc-execution.json", ".hidden-dir", "state-link", "dir-link",
                       "abs-link", "loop", ".bjc-tmp"):  # fmt: skip
            assert hidden not in page, (listing, hidden)
    assert (await client.head(f"/{E2}/node-a.json")).status == 200
    assert (await client.head(f"/{E2}/state-link")).status == 404


async def test_uploads_and_results_are_served_inert(tmp_path: Path, aiohttp_client: Any) -> None:
    """An uploaded page shares the summary pages' origin: it must run nothing there."""
    root = await reports(tmp_path)
    store = ReportStore(root)
    await store.write_log(E2, "node-a", "check", b"<script>alert(1)</script>\n")
    async with store.upload(E2, "node-a", "x.svg") as sink:
        await sink.write(b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>')
    client = await aiohttp_client(make_file_app(root))
    served = {
        f"/{E2}/node-a-report.html": "text/html",  # the type of its name, as in Go: it shows
        f"/{E2}/node-a-x.svg": "image/svg+xml",
        f"/{E2}/node-a.json": "application/json",  # opens in the browser as text
        f"/{E2}/node-a-container-check.log": "text/plain",
        "/latest/node-a-report.html": "text/html",
        f"/{E2}/missing.html": "text/plain",  # a 404, from the file server too
        "/summary/latest/summary.json": "application/json",
    }
    for path, content_type in served.items():
        for method in ("GET", "HEAD"):
            resp = await client.request(method, path)
            assert resp.content_type == content_type, path
            assert resp.headers["X-Content-Type-Options"] == "nosniff", path
            assert resp.headers["Content-Security-Policy"] == UPLOAD_CSP, path
    policy = dict(d.strip().partition(" ")[::2] for d in UPLOAD_CSP.split(";"))
    assert policy["sandbox"] == ""  # no allow-scripts, allow-same-origin, allow-forms, ...
    assert policy["default-src"] == "'none'"  # no fetch: scripts, frames, connections, ...


async def test_bjc_pages_get_a_strict_csp_that_allows_their_own_stylesheet(
    tmp_path: Path, aiohttp_client: Any
) -> None:
    root = await reports(tmp_path)
    client = await aiohttp_client(make_file_app(root))
    for path in ("/", f"/{E2}/", "/latest/", "/summary/", f"/summary/{E2}/", "/summary/latest/"):
        resp = await client.get(path)
        assert resp.status == 200 and resp.content_type == "text/html", path
        assert resp.headers["Content-Security-Policy"] == PAGE_CSP, path
        assert resp.headers["X-Content-Type-Options"] == "nosniff", path
        page = await resp.text()
        # what PAGE_CSP would block is not there: no script, no handler, no style
        # attribute, nothing loaded from elsewhere
        blocked = re.findall(r"<script|<link|<img|<iframe|<object|\s(?:on\w+|style|src)=", page)
        assert blocked == [], path
        for style in re.findall(r"<style>(.*?)</style>", page, flags=re.S):  # by its hash
            digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
            assert f"style-src 'sha256-{digest}'" in PAGE_CSP
    policy = dict(d.strip().partition(" ")[::2] for d in PAGE_CSP.split(";"))
    assert policy["default-src"] == "'none'" and "script-src" not in policy
    assert policy["base-uri"] == policy["form-action"] == "'none'"


async def test_file_app_creates_missing_root(tmp_path: Path, aiohttp_client: Any) -> None:
    client = await aiohttp_client(make_file_app(tmp_path / "new"))
    assert (await client.get("/")).status == 200


async def test_health_and_readiness(tmp_path: Path, aiohttp_client: Any) -> None:
    root = await reports(tmp_path)
    server = await serve(web.Application(), "127.0.0.1", 0)
    assert bound_port(server) > 0
    loaded = False
    app = make_health_app(
        {"report-directory": report_directory_check(root), "callback-server": runner_check(server)},
        readiness={"history-loaded": lambda: loaded},
    )
    client = await aiohttp_client(app)
    try:
        healthz = await client.get("/healthz")
        assert healthz.status == 200
        readyz = await client.get("/readyz")
        assert readyz.status == 500
        assert "[-]history-loaded failed" in await readyz.text()

        loaded = True
        assert (await client.get("/readyz")).status == 200

        shutil.rmtree(root)
        healthz = await client.get("/healthz")
        assert healthz.status == 500
        assert "[-]report-directory failed" in await healthz.text()
        assert (await client.get("/readyz")).status == 500
        root.mkdir()
        assert (await client.get("/healthz")).status == 200

        app[CHECKS]["late-check"] = lambda: False  # registered after start
        assert (await client.get("/healthz")).status == 500
        del app[CHECKS]["late-check"]
    finally:
        await server.cleanup()
    healthz = await client.get("/healthz")
    assert healthz.status == 500
    assert "[-]callback-server failed" in await healthz.text()
