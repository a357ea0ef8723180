"""`bjc mock`: the callback API for job authors, without a cluster.

Job script authors point `CALLBACK_SERVICE_*_URL` at `http://localhost:8090/report/
<node>/<executionID>/...` and see exactly what the controller would answer: the same
aiohttp app and handlers as the real controller (bjc.web.callback), in DEV_MODE (any
node and execution id is accepted), validating against the gauges of `--config` when
given. Nothing is stored and no Kubernetes Event is created; each request is logged
to stdout as one line with its status and decoded payload (control characters a job
sent shown as escapes, `bjc.terminal`).

Deliberately not here: a second implementation of the handlers. The mock differs
from the real controller only in the store (discards), the target (logs events)
and the metrics (none).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import json
import signal
import sys
from collections.abc import AsyncIterator, Container, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from bjc.config.configmap import load_config_map_manifest
from bjc.config.settings import Config, load_config
from bjc.config.values import ConfigError
from bjc.kube.events import EventRequest, format_note
from bjc.reports.execution import Stale
from bjc.reports.store import ReportStore, UploadSink, UploadTooLarge
from bjc.terminal import visible
from bjc.web import bound_port, serve
from bjc.web.callback import Handler, make_callback_app

_NOWHERE = "/nonexistent-bjc-mock-reports"

# What the store/target saw during the current request, printed by the middleware.
_received: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "bjc_mock_received", default=None
)


def _note(text: str) -> None:
    seen = _received.get()
    if seen is not None:
        seen.append(text)


class _DiscardSink(UploadSink):
    """Counts and size-checks the data, writes nothing."""

    async def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.max_size is not None and self.size > self.max_size:
            raise UploadTooLarge(self.max_size)

    async def flush(self) -> None:
        return None


class DiscardingStore(ReportStore):
    """A ReportStore that validates names like the real one and keeps nothing."""

    def __init__(self) -> None:
        super().__init__(Path(_NOWHERE))

    async def ensure_execution(self, execution_id: str) -> Path:
        return self.execution_dir(execution_id)

    async def write_result(
        self, execution_id: str, node: str, data: bytes, *, attempt: int = 0
    ) -> None:
        self._show(node, data)

    def write_results_now(
        self, execution_id: str, results: Sequence[tuple[str, int, bytes]]
    ) -> None:
        for node, _, data in results:
            self._show(node, data)

    def _show(self, node: str, data: bytes) -> None:
        name = self.result_filename(node)
        try:
            shown = json.dumps(json.loads(data), separators=(",", ":"), ensure_ascii=False)
        except (ValueError, RecursionError):
            shown = data.decode("utf-8", "replace")
        _note(f"file={name} result={shown}")

    @contextlib.asynccontextmanager
    async def upload(
        self, execution_id: str, node: str, name: str, *, max_size: int | None = None
    ) -> AsyncIterator[UploadSink]:
        path = self.execution_dir(execution_id) / self.upload_filename(node, name)
        sink = _DiscardSink(self, path, max_size)
        seen = _received.get()
        slot = len(seen) if seen is not None else 0
        _note("")  # keeps the parts of a multipart body in their order
        yield sink
        if seen is not None:
            seen[slot] = f"file={path.name} bytes={sink.size}"


class MockTarget:
    """Accepts any node and execution (the app runs in DEV_MODE); logs events."""

    def execution_allowed(self, node: str, execution_id: str) -> bool:
        return False

    def nodes_of(self, execution_id: str) -> Container[str] | None:
        return None  # no execution is known: only bjc's own names are refused

    def token_valid(self, node: str, execution_id: str, token: str, attempt: int) -> bool:
        return True

    def stale(self, node: str, execution_id: str, attempt: int) -> Stale | None:
        return None  # no attempts are known: every one is accepted

    def result_received(self, node: str, execution_id: str) -> None:
        return None

    async def create_event(self, node: str, execution_id: str, event: EventRequest) -> None:
        kind = "Warning" if event.warning else "Normal"
        note = format_note(event.message, event.args)
        _note(
            f"event type={kind} reason={event.reason} action={event.action or 'n/a'} "
            f"note={json.dumps(note, ensure_ascii=False)}"
        )


class NoMetrics:
    """The mock exposes no metrics; label checks happen in the callback handler.

    It holds no series, so the series limits apply to each result on its own.
    """

    def __init__(self, config: Config) -> None:
        self.gauges = config.metrics.gauges

    def result_series(
        self, execution_id: str, node: str, result: Mapping[str, Iterable[Any]]
    ) -> list[tuple[str, tuple[str, ...]]]:
        """(suffix, configured label values) of each entry of a configured gauge."""
        return [
            (suffix, tuple(entry.labels.get(label, "") for label in gauge.labels))
            for suffix, entries in result.items()
            if (gauge := self.gauges.get(suffix)) is not None
            for entry in entries
        ]

    def set_results(self, execution_id: str, node: str, series: object) -> None:
        return None

    def set_processing(self, execution_id: str, node: str, value: float) -> None:
        return None

    def count_callback(self, route: str, code: int) -> None:
        return None

    def count_stale_callback(self, route: str, reason: str) -> None:
        return None

    def new_series(self, execution_id: str, series: list[tuple[str, tuple[str, ...]]]) -> int:
        return len(set(series))

    def series_held(self, execution_id: str, node: str) -> tuple[int, int]:
        return 0, 0


@web.middleware
async def _log_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    seen: list[str] = []
    token = _received.set(seen)
    status = 500
    try:
        response = await handler(request)
        status = response.status
        if status >= 400 and isinstance(response, web.Response) and response.text:
            seen.append(f"error={json.dumps(response.text.strip(), ensure_ascii=False)}")
        return response
    except web.HTTPException as e:
        status = e.status
        raise
    finally:
        _received.reset(token)
        parts = [request.method, request.path, str(status), *filter(None, seen)]
        print(visible(" ".join(parts)), flush=True)  # what a job sent: no control characters


def load_mock_config(path: str | None) -> tuple[Config, list[str]]:
    """A config.yaml or a ConfigMap manifest; default: no gauges. Returns (config, warnings).

    Raises bjc.config.values.ConfigError with every problem, OSError if the file is unreadable.
    """
    if path is None:
        return Config(name="mock", report_directory=_NOWHERE), []
    text = Path(path).read_text()
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        doc = None  # load_config reports the syntax error with its position
    if isinstance(doc, dict) and doc.get("kind") == "ConfigMap":
        loaded = load_config_map_manifest(text)
        return loaded.config, loaded.warnings
    # The mock stores nothing, so config.yaml needs no reportDirectory.
    return load_config(text, report_directory=_NOWHERE)


def make_mock_app(config: Config) -> web.Application:
    # no result fast path: `_log_requests` must see every request
    app = make_callback_app(
        config,
        DiscardingStore(),
        NoMetrics(config),
        MockTarget(),
        dev_mode=True,
        fast_results=False,
    )
    app.middlewares.insert(0, _log_requests)
    return app


async def run_mock(config: Config, host: str, port: int) -> None:
    runner = await serve(make_mock_app(config), host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        print(
            f"bjc mock: callback API on http://{host}:{bound_port(runner)}"
            "/report/{node}/{executionID}/{result,file,event} (nothing is stored)",
            flush=True,
        )
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bjc mock", description="Mock callback API for job pod authors (stores nothing)."
    )
    parser.add_argument("--port", type=int, default=8090, help="listen port (default 8090)")
    parser.add_argument("--host", default="0.0.0.0", help="listen address (default 0.0.0.0)")
    parser.add_argument(
        "--config", metavar="FILE", help="config.yaml or ConfigMap manifest (gauges to check)"
    )
    args = parser.parse_args(argv)
    try:
        config, warnings = load_mock_config(args.config)
    except ConfigError as e:
        for problem in e.problems:
            print(f"bjc mock: {args.config}: {visible(problem)}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"bjc mock: cannot read {args.config}: {e}", file=sys.stderr)
        return 1
    for warning in warnings:
        print(f"bjc mock: warning: {visible(warning)}", file=sys.stderr)
    asyncio.run(run_mock(config, args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
