"""The summary pages of a running `bjc demo`, read in headless Chromium without JavaScript.

Chromium is Debian's `chromium`, driven by playwright (`executable_path`; playwright's
own browser download is never used). Screenshots go to the test's tmp directory, and
also to `$BJC_SCREENSHOTS` when set (`BJC_SCREENSHOTS=docs/img` refreshes the README's).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.demo_process import (
    FAILED,
    NO_RESULT,
    NODES,
    TIMED_OUT,
    RunningDemo,
    require,
    running_demo,
    unavailable,
)

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def chromium() -> str:
    path = require("chromium")["chromium"]
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        unavailable("playwright, a test extra (pip install -e '.[test]')")
    return path


@pytest.fixture(scope="module")
def demo(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDemo]:
    with running_demo(tmp_path_factory.mktemp("demo")) as running:
        yield running


@pytest.fixture
def page(chromium: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium)
        context = browser.new_context(
            java_script_enabled=False, viewport={"width": 1280, "height": 720}
        )
        yield context.new_page()
        browser.close()


def screenshot(page: Any, name: str, tmp_path: Path) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000  # a rendered page, not a blank one
    if keep := os.environ.get("BJC_SCREENSHOTS"):
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / name)
    return path


def test_index_execution_and_a_failed_nodes_log(
    page: Any, demo: RunningDemo, tmp_path: Path
) -> None:
    eid = demo.execution
    page.goto(f"{demo.files_url}/summary/")
    assert page.locator("h1").inner_text() == "Executions"
    row = page.locator("tbody tr", has_text=eid)
    cells = row.locator("td").all_inner_texts()
    assert cells[1] == "finished" and cells[4] == str(NODES)  # state, nodes
    assert cells[6:10] == ["1", "1", "0", "3"]  # failed, timed out, aborted, with errors
    screenshot(page, "summary-index.png", tmp_path)

    row.get_by_role("link", name=eid).click()
    assert page.url == f"{demo.files_url}/summary/{eid}/"
    assert page.locator("h1").inner_text().startswith(f"Execution {eid}")
    statuses = {
        r.locator("td").nth(0).inner_text().split()[0]: r.locator("td").nth(1).inner_text()
        for r in page.locator("tbody tr").all()
    }
    assert len(statuses) == NODES
    assert statuses[FAILED] == "failed" and statuses[TIMED_OUT] == "timed out"
    assert statuses[NO_RESULT] == "succeeded"
    failed_row = page.locator("tbody tr", has_text=FAILED)
    assert "disk check crashed: /var is read-only" in failed_row.inner_text()
    screenshot(page, "summary-execution.png", tmp_path)

    failed_row.get_by_role("link", name="container-check.log").click()
    assert page.url == f"{demo.files_url}/{eid}/{FAILED}-container-check.log"
    assert "disk check crashed: /var is read-only" in page.locator("body").inner_text()


def test_filter_links_narrow_the_table(page: Any, demo: RunningDemo) -> None:
    page.goto(f"{demo.files_url}/summary/{demo.execution}/")
    page.get_by_role("link", name="with errors (3)").click()
    cells = page.locator("tbody tr td:first-child").all_inner_texts()
    assert sorted(cell.split()[0] for cell in cells) == sorted([FAILED, NO_RESULT, TIMED_OUT])
    page.get_by_role("link", name="all (8)").click()
    assert page.locator("tbody tr").count() == NODES


@pytest.fixture
def scripted(chromium: str) -> Iterator[tuple[Any, list[str]]]:
    """A page with JavaScript on (a hostile upload would have it), and its console."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium)
        page = browser.new_page()
        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))
        yield page, console
        browser.close()


def test_the_pages_keep_their_style_under_their_content_security_policy(
    scripted: tuple[Any, list[str]], demo: RunningDemo
) -> None:
    page, console = scripted
    for path in ("/summary/", f"/summary/{demo.execution}/", f"/{demo.execution}/"):
        response = page.goto(f"{demo.files_url}{path}")
        assert (
            response is not None
            and "default-src 'none'" in response.headers["content-security-policy"]
        )
    page.goto(f"{demo.files_url}/summary/{demo.execution}/")
    header = page.locator("th").first.evaluate("e => getComputedStyle(e).backgroundColor")
    assert header == "rgb(243, 245, 247)"  # summary.css applied: allowed by its hash
    assert [m for m in console if "Content Security Policy" in m] == []


def test_an_uploaded_page_runs_no_script_and_loads_nothing(
    scripted: tuple[Any, list[str]], demo: RunningDemo
) -> None:
    """Served as text/html from the summary pages' origin, and inert there."""
    page, console = scripted
    name = "demo-node-001-hostile.html"  # as `bjc report file` stores an upload
    (demo.reports / demo.execution / name).write_text(
        "<title>report</title><style>h1 { color: rgb(1, 2, 3) }</style><h1>report</h1>"
        '<script>document.title = "ran"; fetch("/summary/summary.json")</script>'
        '<img src="/summary/">'
    )
    response = page.goto(f"{demo.files_url}/{demo.execution}/{name}")
    assert response is not None and response.headers["content-type"].startswith("text/html")
    assert page.title() == "report"  # the script did not run
    assert page.locator("h1").evaluate("e => getComputedStyle(e).color") == "rgb(1, 2, 3)"
    assert page.evaluate("self.origin") == "null"  # sandboxed: not the summary pages' origin
    assert any("sandboxed" in m and "allow-scripts" in m for m in console), console
    assert any("img-src" in m for m in console), console  # nothing loaded
