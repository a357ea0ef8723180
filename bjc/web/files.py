"""The report directory served read-only, with HTML directory listings (port 8080, as in Go).

Operators browse `<reportDirectory>/latest/...` and older executions here. GET and HEAD
only; files go out through aiohttp's `FileResponse` (ranges, ETags, content types, file
I/O in its executor); listings and path checks run in a worker thread.

What is never listed nor served:
- hidden names (starting with `.`): bjc's execution state, which holds the callback
  tokens, its journal and in-flight temporary files;
- anything whose real path, symlinks resolved, leaves the report directory or passes
  through a hidden name on the way: the relative `latest` link to a sibling execution
  is served, a link to `/etc` or to `.bjc-execution.json` is not (404, and it is left
  out of listings).

Execution summaries (`/summary/`, bjc.web.summary) are mounted here too.

Uploads are what job pods sent, served from the same origin as the summary pages,
so nothing served here is active content:
- every response carries `X-Content-Type-Options: nosniff` (a browser takes the
  content type as sent, never guesses HTML in a `.txt` or a `.json`);
- every response but bjc's own pages carries `UPLOAD_CSP`: `sandbox` (a unique
  origin, no script, no form, no popup, no plugin) and no fetch of anything, so an
  uploaded `.html` or `.svg` still shows, inline styles and `data:` images included,
  and can neither run code on this origin nor call out;
- bjc's pages (summaries, directory listings) carry the strict `PAGE_CSP`.
Content types stay those of the file names, as in the Go controller's file server: a
text, JSON or log file opens in the browser.

A result a job posted a moment ago may still be only in the execution's results log
(`bjc.reports.store`: it becomes `<node>.json` a few seconds later): a GET of
`<execution>/<node>.json` answers it from the log then, and the listing shows it, so
a GET right after a 200 always sees the result (on a standby too: it reads the log).

Deliberately not here: uploads or any write access, and authentication (the Go
controller had none either; put it behind the cluster's network policy). A symlink
swapped between the check and the open is not defended against: whoever can do that
can already write the report directory.
"""

from __future__ import annotations

import asyncio
import html
import os
from pathlib import Path
from urllib.parse import quote

from aiohttp import web

from bjc.reports import resultlog
from bjc.web.summary import PAGE_CSP, make_summary_app

ROOT = web.AppKey("root", Path)

#: Sent with every file (and everything else that is not a page of bjc's own).
UPLOAD_CSP = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _hidden(parts: tuple[str, ...] | list[str]) -> bool:
    return any(part.startswith(".") for part in parts)


def _real(root: Path, path: Path) -> Path | None:
    """The real path behind `path` when it may be served, else None."""
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):  # missing, or a symlink loop
        return None
    if real != root and not real.is_relative_to(root):
        return None
    return None if _hidden(real.relative_to(root).parts) else real


def _logged(directory: Path) -> dict[str, bytes]:
    """The results still in the directory's results log, by file name (`<node>.json`)."""
    log = directory / resultlog.RESULTS_LOG
    try:
        if log.stat().st_size == 0:
            return {}
    except OSError:
        return {}
    return {f"{node}.json": body for node, body in resultlog.read(str(log)).items()}


def _listing(root: Path, directory: Path, shown_as: str) -> str:
    """aiohttp's index page, without the entries that would not be served (and with the
    results still in the results log)."""
    entries = []
    names = set()
    with os.scandir(directory) as it:
        for entry in it:
            if entry.name.startswith("."):
                continue
            if entry.is_symlink() and _real(root, Path(entry.path)) is None:
                continue
            name = entry.name + "/" if entry.is_dir() else entry.name
            entries.append((entry.name, name))
            names.add(entry.name)
    entries += [(name, name) for name in _logged(directory) if name not in names]
    prefix = shown_as.rstrip("/")
    items = "\n".join(
        f'<li><a href="{quote(f"{prefix}/{target}")}">{html.escape(name)}</a></li>'
        for target, name in sorted(entries)
    )
    title = f"Index of {html.escape(shown_as)}"
    return (
        f"<html>\n<head>\n<title>{title}</title>\n</head>\n<body>\n<h1>{title}</h1>\n"
        f"<ul>\n{items}\n</ul>\n</body>\n</html>"
    )


def _lookup(root: Path, parts: list[str]) -> tuple[Path, bool] | bytes | None:
    """The real path to serve and whether it is a directory, or a result from a log."""
    if len(parts) == 2 and parts[1].endswith(".json"):
        directory = _real(root, root / parts[0])
        if directory is not None and directory.parent == root and directory.is_dir():
            logged = _logged(directory).get(parts[1])
            if logged is not None:
                return logged  # newer than a file of that name
    real = _real(root, root.joinpath(*parts))
    return None if real is None else (real, real.is_dir())


async def _serve(request: web.Request) -> web.StreamResponse:
    root = request.app[ROOT]
    parts = [p for p in request.match_info["path"].split("/") if p]
    if _hidden(parts):  # also `..`, which aiohttp normalises away before this anyway
        raise web.HTTPNotFound()
    found = await asyncio.to_thread(_lookup, root, parts)
    if found is None:
        raise web.HTTPNotFound()
    if isinstance(found, bytes):
        return web.Response(body=found, content_type="application/json")
    real, is_dir = found
    if is_dir:
        shown_as = "/" + "/".join(parts)
        page = await asyncio.to_thread(_listing, root, real, shown_as)
        listing = web.Response(text=page, content_type="text/html")
        listing.headers["Content-Security-Policy"] = PAGE_CSP
        return listing
    response = web.FileResponse(real)
    if real.name.endswith(".log"):  # pod logs open in the browser instead of downloading
        response.content_type, response.charset = "text/plain", "utf-8"
    return response


async def _inert(request: web.Request, response: web.StreamResponse) -> None:
    """Every response of the file server (the summary app's too): see the module doc."""
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers.setdefault("Content-Security-Policy", UPLOAD_CSP)


def make_file_app(root: Path | str) -> web.Application:
    """Serve `root` (created if missing) read-only with directory listings."""
    directory = Path(root)
    directory.mkdir(parents=True, exist_ok=True)
    app = web.Application()
    app.on_response_prepare.append(_inert)
    app[ROOT] = directory.resolve()
    app.add_subapp("/summary/", make_summary_app(directory))  # before "/": it must win
    app.router.add_get("/{path:.*}", _serve)
    return app
