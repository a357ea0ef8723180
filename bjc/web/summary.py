"""Execution summary pages on the file server: HTML for people, `summary.json` for scripts.

Mounted by the file app under `/summary/` (execution directories are 12-digit ids,
so the name cannot collide with one):

    /summary/                      index of executions with their counts (HTML)
    /summary/summary.json          the same as JSON
    /summary/<id>/                 one execution: counts, timing, every node (HTML)
    /summary/<id>/summary.json     the same as JSON
    /summary/latest/...            the execution `latest` points to

An execution page takes `?status=<status>` (`failed`, `timed_out`, `aborted`,
`unknown`, `running`, `pending`, `succeeded`, or `error` for every node counted as
an error) to list only those nodes; anything else answers 400 naming the choices.

The pages are plain server-rendered HTML (jinja2, autoescaped: node names, reasons
and result labels come from job pods), readable without JavaScript; their links to
result files, uploads and pod logs point into the directory listings of the file
server, relative to the page so they also work behind a path-prefix proxy. What
is shown comes from bjc.reports.summary (read-only, cached by the execution's signature);
rendered bytes of an unfiltered page are kept for as long as that signature holds,
and rendering runs in a thread so a 5,000-node page does not stall the event loop.

Every page is sent with a strict Content-Security-Policy (`PAGE_CSP`): nothing may
load or run but the page's own stylesheet, inline in `<style>` and allowed by its
hash (`templates/summary.css`, inserted verbatim). Should an escaping bug ever let
job text through as markup, a browser still runs no script and loads nothing.

Deliberately not here: computing summaries (bjc.reports.summary) and serving files
(bjc.web.files).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import msgspec
from aiohttp import web

from bjc.reports.summary import (
    MAX_RESULT_BYTES,
    STATUSES,
    ExecutionSummary,
    Signature,
    SummaryCache,
    filter_nodes,
    problem,
    short_duration,
)

CACHE_KEY = web.AppKey("summary_cache", SummaryCache)

_encoder = msgspec.json.Encoder()
_NONE = "\N{EN DASH}"  # shown for a time or duration that does not exist (yet)
_LABELS = {s: s.replace("_", " ") for s in STATUSES}


def _when(value: datetime | None) -> str:
    return _NONE if value is None else value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _seconds(value: float | None) -> str:
    return _NONE if value is None else short_duration(value)


def _ms(value: float | None) -> str:
    return _NONE if value is None else short_duration(value / 1000.0)


def _number(value: float) -> str:
    return f"{value:g}"


_LOADER = jinja2.PackageLoader("bjc.web", "templates")
_STYLESHEET = _LOADER.get_source(jinja2.Environment(), "summary.css")[0]
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLESHEET.encode()).digest()).decode()

#: What a page may load: its inline stylesheet (by hash), nothing else; no script, no
#: form target, no <base>. Directory listings (bjc.web.files) are sent with it too.
PAGE_CSP = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; base-uri 'none'; form-action 'none'"
)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=_LOADER,
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=_when, seconds=_seconds, ms=_ms, number=_number, problem=problem)
    env.globals.update(
        timezone=datetime.now().astimezone().strftime("%Z (UTC%z)"),
        max_result_bytes=MAX_RESULT_BYTES,
        stylesheet=_STYLESHEET,  # `| safe` in base.html: verbatim, PAGE_CSP allows it by hash
    )
    return env


class RenderedPages:
    """Rendered bodies of unfiltered pages, valid while their execution's signature holds."""

    KEEP = 2  # the page and the JSON of one 5,000-node execution: ~5 MB

    def __init__(self) -> None:
        self._pages: collections.OrderedDict[tuple[str, str], tuple[Signature, bytes]] = (
            collections.OrderedDict()
        )

    async def get(
        self, key: tuple[str, str], signature: Signature, render: Callable[[], bytes]
    ) -> bytes:
        cached = self._pages.get(key)
        if cached is None or cached[0] != signature:
            cached = self._pages[key] = signature, await asyncio.to_thread(render)
        self._pages.move_to_end(key)
        while len(self._pages) > self.KEEP:
            self._pages.popitem(last=False)
        return cached[1]


PAGES_KEY = web.AppKey("summary_pages", RenderedPages)


def _respond(body: bytes, content_type: str) -> web.Response:
    response = web.Response(body=body, content_type=content_type, charset="utf-8")
    response.headers["Cache-Control"] = "no-cache"
    if content_type == "text/html":
        response.headers["Content-Security-Policy"] = PAGE_CSP
    if len(body) > 1024:
        response.enable_compression()
    return response


def _html(template: jinja2.Template, **context: Any) -> Callable[[], bytes]:
    return lambda: template.render(**context).encode()


def _filters(summary: ExecutionSummary) -> list[tuple[str, str, int]]:
    """(status query value, label, count) for the filter links; "" is every node."""
    counts = summary.counts
    out = [("", "all", counts.nodes)]
    out += [(s, _LABELS[s], getattr(counts, s)) for s in STATUSES if getattr(counts, s)]
    out.append(("error", "with errors", counts.errors))
    return out


async def _execution(request: web.Request) -> tuple[ExecutionSummary, Signature, str]:
    """The execution of the URL and the `status` filter; 400/404 with the reason."""
    cache = request.app[CACHE_KEY]
    try:
        summary, signature = await cache.execution(request.match_info["execution_id"])
    except ValueError as e:
        raise web.HTTPBadRequest(text=f"{e}\n") from None
    except FileNotFoundError as e:
        raise web.HTTPNotFound(text=f"{e}\n") from None
    status = request.query.get("status", "")
    # the changes depend on the executions before it too
    return summary, (*signature, hash(_encoder.encode(summary.changes))), status


def _filtered(summary: ExecutionSummary, status: str) -> ExecutionSummary:
    try:
        return filter_nodes(summary, status)
    except ValueError as e:
        raise web.HTTPBadRequest(text=f"{e}\n") from None


def make_summary_app(root: Path | str) -> web.Application:
    """The `/summary/` routes over the report directory `root` (mounted by the file app)."""
    app = web.Application()
    app[CACHE_KEY] = SummaryCache(root)
    app[PAGES_KEY] = RenderedPages()
    env = _environment()
    index_page = env.get_template("index.html")
    execution_page = env.get_template("execution.html")

    async def index_html(request: web.Request) -> web.Response:
        index = await request.app[CACHE_KEY].index()
        body = await asyncio.to_thread(_html(index_page, index=index))
        return _respond(body, "text/html")

    async def index_json(request: web.Request) -> web.Response:
        index = await request.app[CACHE_KEY].index()
        return _respond(_encoder.encode(index), "application/json")

    async def execution_html(request: web.Request) -> web.Response:
        summary, signature, status = await _execution(request)
        render = _html(
            execution_page,
            s=_filtered(summary, status) if status else summary,
            filters=_filters(summary),
            selected=status,
        )
        if status:
            body = await asyncio.to_thread(render)
        else:
            body = await request.app[PAGES_KEY].get((summary.id, "html"), signature, render)
        return _respond(body, "text/html")

    async def execution_json(request: web.Request) -> web.Response:
        summary, signature, status = await _execution(request)
        if status:
            body = _encoder.encode(_filtered(summary, status))
        else:
            body = await request.app[PAGES_KEY].get(
                (summary.id, "json"), signature, lambda: _encoder.encode(summary)
            )
        return _respond(body, "application/json")

    async def add_slash(request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently(f"{request.path}/")

    routes: list[tuple[str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
        ("", add_slash),
        ("/", index_html),
        ("/summary.json", index_json),
        ("/{execution_id}", add_slash),
        ("/{execution_id}/", execution_html),
        ("/{execution_id}/summary.json", execution_json),
    ]
    for path, handler in routes:
        app.router.add_get(path, handler)
    return app
