"""The report directory served read-only, with HTML directory listings (SPEC A7, port 8080).

Operators browse `<reportDirectory>/latest/...` and older executions here. aiohttp's
static resource does the work: GET/HEAD only, listings via `show_index`, file I/O in
its executor. It runs with `follow_symlinks=False`, which in aiohttp means every
resolved path (symlinks included) must stay inside the root: the relative `latest`
link to a sibling execution directory is served, a link pointing anywhere outside the
root answers 404.

Hidden files (names starting with `.`: bjc's execution state, which holds the
callback tokens, its journal and in-flight temporary files) are never served.

Execution summaries (`/summary/`, bjc.web.summary) are mounted here too.

Deliberately not here: uploads or any write access, and authentication (the Go
controller had none either; put it behind the cluster's network policy).
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

from bjc.web.summary import make_summary_app


@web.middleware
async def _no_hidden_files(request: web.Request, handler: Handler) -> web.StreamResponse:
    if any(part.startswith(".") for part in request.match_info.get("filename", "").split("/")):
        raise web.HTTPNotFound()
    return await handler(request)


@web.middleware
async def _logs_as_text(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Pod logs (`.log`, unknown to `mimetypes`) open in the browser instead of downloading."""
    response = await handler(request)
    if isinstance(response, web.FileResponse) and request.path.endswith(".log"):
        response.content_type, response.charset = "text/plain", "utf-8"
    return response


def make_file_app(root: Path | str) -> web.Application:
    """Serve `root` (created if missing) read-only with directory listings."""
    directory = Path(root)
    directory.mkdir(parents=True, exist_ok=True)
    app = web.Application(middlewares=[_no_hidden_files, _logs_as_text])
    app.add_subapp("/summary/", make_summary_app(directory))  # before "/": it must win
    app.router.add_static("/", directory, show_index=True, follow_symlinks=False)
    return app
