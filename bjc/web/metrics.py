"""The metrics server (`metrics.port`): GET /metrics, gzip-encoded when accepted.

Why this exists: a scrape of a large controller (30 executions of 5,000 nodes render
about 30 MB of text) must neither stall the event loop, which also answers the
callbacks, nor hold the whole text in memory twice. The handler collects the
exposition's chunks on the event loop (cheap: unchanged blocks keep their text, see
bjc.reports.series), and streams a large body in pieces of about 1 MiB, each inflated
and gzipped in a thread (zlib releases the GIL). Which series exist and their format
are bjc.reports.metrics' business; this module only serves them.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web

from bjc.reports.metrics import Metrics
from bjc.reports.series import Chunk, Packed, assemble, chunks_size

__all__ = ["METRICS_KEY", "make_metrics_app", "metrics_handler"]

METRICS_KEY = web.AppKey("metrics", Metrics)
_GZIP_MIN_BYTES = 1024
_THREAD_MIN_BYTES = 256 * 1024


def _accepts_gzip(header: str) -> bool:
    for item in header.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() not in ("gzip", "*"):
            continue
        q = params.strip()
        if q.startswith("q="):
            try:
                return float(q[2:]) > 0
            except ValueError:
                return False
        return True
    return False


def _gzip(body: bytes | bytearray) -> bytes:
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)  # level 1, gzip container
    return compressor.compress(body) + compressor.flush()


def _encode(chunks: list[Chunk], gzip: bool) -> tuple[bytes | bytearray, bool]:
    """The response body from the chunks, and whether it is gzip-encoded."""
    body = assemble(chunks)
    if gzip and len(body) >= _GZIP_MIN_BYTES:
        return _gzip(body), True
    return body, False


_STREAM_PIECE_BYTES = 1 << 20


def _pieces(chunks: list[Chunk], gzip: bool) -> Iterator[bytes]:
    """The body in pieces of about 1 MiB: only one inflated piece is alive at a time."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31) if gzip else None
    buf = bytearray()
    for chunk in chunks:
        buf += chunk.inflate() if isinstance(chunk, Packed) else chunk
        if len(buf) >= _STREAM_PIECE_BYTES:
            yield compressor.compress(buf) if compressor else bytes(buf)
            buf.clear()
    yield (compressor.compress(buf) + compressor.flush()) if compressor else bytes(buf)


def metrics_handler(metrics: Metrics) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """An aiohttp handler for GET /metrics: negotiated format, gzip when accepted.

    The chunks are collected on the event loop (cheap: cached text of unchanged
    blocks). A large exposition (30 executions of 5,000 nodes render ~30 MB) is
    streamed: each ~1 MiB piece is inflated and gzipped in a thread (zlib releases
    the GIL), so a scrape neither stalls callbacks nor holds the whole text.
    """

    async def handle_metrics(request: web.Request) -> web.StreamResponse:
        chunks, content_type = metrics.render_chunks(request.headers.get("Accept"))
        gzip = _accepts_gzip(request.headers.get("Accept-Encoding", ""))
        size = chunks_size(chunks)
        headers = {"Content-Type": content_type, "Vary": "Accept-Encoding"}
        if size <= _THREAD_MIN_BYTES and not any(isinstance(c, Packed) for c in chunks):
            body, gzipped = _encode(chunks, gzip)
            if gzipped:
                headers["Content-Encoding"] = "gzip"
            return web.Response(body=body, headers=headers)
        gzip = gzip and size >= _GZIP_MIN_BYTES
        if gzip:
            headers["Content-Encoding"] = "gzip"
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        pieces = _pieces(chunks, gzip)
        while (piece := await asyncio.to_thread(next, pieces, None)) is not None:
            await response.write(piece)
        await response.write_eof()
        return response

    return handle_metrics


def make_metrics_app(metrics: Metrics) -> web.Application:
    """The metrics server (`metrics.port`): GET /metrics."""
    app = web.Application()
    app[METRICS_KEY] = metrics
    app.router.add_get("/metrics", metrics_handler(metrics))
    return app
