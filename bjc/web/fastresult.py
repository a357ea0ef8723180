"""The result callback's fast path: `POST /report/{node}/{executionID}/result` without aiohttp.

Why it exists: result posts are nearly all of the callback API's traffic, and aiohttp's
own work per request (140-190 µs of CPU on the 2-core VM the benchmarks run on, with a
bare handler; docs/decisions/result-fast-path.md) was more than the whole budget of a
durable result. This module serves that one route on an `asyncio.Protocol` with
httptools' parser (llhttp, as uvicorn uses it), in front of the aiohttp callback app on
the same port, and calls the same function the aiohttp handler calls
(`bjc.web.callback.result`): every check, status, body text and count is defined once.

Which server answers:
- The first request of a connection decides. A `POST .../result` with a plain path
  (printable ASCII, no percent-escapes, no dot segments), HTTP/1.x, no Upgrade, no
  `Expect` other than `100-continue`, is served here; anything else, including a first
  request httptools cannot parse, hands the connection to aiohttp for good: its
  protocol is created from the runner's `web.Server`, given the transport and every
  byte received so far.
- A connection served here that later sends another kind of request hands over too:
  that request and everything after it are given to aiohttp, re-serialized (the head as
  received, a chunked body re-chunked) until a message boundary and as received from
  then on, once every earlier answer here is written, so answers stay in request order.

Answering: a result post whose body has come whole, on a connection with nothing else
to answer before it, goes to the site's inbox; once the loop has read every ready
connection, the inbox is answered in one go (`bjc.web.callback.results_now`: admitted,
checked, appended to each execution's results log with one write, applied, answered),
with no task, future or coroutine per result. Everything else (a body still coming,
pipelined requests behind another, `durability: fsync`, DEV_MODE's unknown executions)
is answered by the connection's one task through `result`, in request order.

What this server does: keep-alive (HTTP/1.1 by default, `Connection: close`, HTTP/1.0
`keep-alive`), pipelining (requests are answered one after the other, in order),
chunked bodies, `Expect: 100-continue`, the body cap of the app (`client_max_size`: 413
at the headers when the length says so, else as soon as the body passes it, then the
connection closes without reading the rest), a client that goes away (counted 499 by
`result`'s caller as aiohttp's middleware does), an unparsable later request or a head
over `MAX_HEAD` (400, then close), aiohttp's keep-alive timeout. On shutdown
(`FastResultSite.stop`, called by `runner.cleanup()`) requests in flight get their
answer and then the connection closes, idle connections close at once, and whatever is
still running after the grace period is cancelled.

Deliberately not here: any other route, TLS, HTTP/2, trailers of chunked bodies (they
are dropped, as aiohttp does), access logs (bjc's servers have none).
"""

from __future__ import annotations

import asyncio
import collections
import enum
import http
import logging
import re
import time
from collections.abc import Callable
from email.utils import formatdate

import httptools
from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.web_runner import BaseSite
from yarl import URL

from bjc.web.callback import (
    BODY_LIMIT,
    METRICS,
    OK,
    Answer,
    Call,
    client_gone,
    refusal,
    result,
    results_now,
)

log = logging.getLogger(__name__)

#: The largest request line plus headers a fast connection takes (400 and close above).
MAX_HEAD = 64 * 1024
#: aiohttp's default: an idle keep-alive connection is closed after this long.
KEEPALIVE_TIMEOUT_S = 3630.0
#: Pipelined requests queued on one connection before it stops reading.
_MAX_QUEUED = 32
#: Bytes waiting for aiohttp (a handover while earlier answers are being written).
_MAX_RELAY_BUFFER = 1024 * 1024
_ROUTE = "result"
#: Plain segments: printable ASCII but for `/`, `%`, `?` and `#` (dot segments are
#: refused after the match).
_RESULT = re.compile(rb'/report/([!"$&-.0->@-~]+)/([!"$&-.0->@-~]+)/result(?:\?([!-~]*))?')
_DOT_SEGMENTS = (b".", b"..")
_REASONS = {s.value: s.phrase for s in http.HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_SERVER = SERVER_SOFTWARE.encode()
_TEXT = b"Content-Type: text/plain; charset=utf-8"
_OCTETS = b"Content-Type: application/octet-stream"  # aiohttp's, for an empty body


class _Date:
    """The Date header's value, formatted once per second (as aiohttp does), and the
    200 answers of that second."""

    second = 0
    value = b""
    ok: dict[tuple[bytes, bool, bool], bytes] = {}

    @classmethod
    def now(cls) -> bytes:
        second = int(time.time())
        if second != cls.second:
            cls.second = second
            cls.value = formatdate(second, usegmt=True).encode()
            cls.ok = {}
        return cls.value


def _serialize(answer: Answer, version: bytes, keep_alive: bool, http10: bool) -> bytes:
    if answer is OK:
        _Date.now()
        key = (version, keep_alive, http10)
        cached = _Date.ok.get(key)
        if cached is None:
            cached = _Date.ok[key] = _serialize_any(answer, version, keep_alive, http10)
        return cached
    return _serialize_any(answer, version, keep_alive, http10)


def _serialize_any(answer: Answer, version: bytes, keep_alive: bool, http10: bool) -> bytes:
    body = answer.text.encode()
    status = answer.status
    lines = [
        b"HTTP/%s %d %s" % (version, status, _REASONS.get(status, "").encode()),
        b"Content-Length: %d" % len(body),
        _TEXT if body else _OCTETS,
        b"Date: " + _Date.now(),
        b"Server: " + _SERVER,
    ]
    if answer.retry_after is not None:
        lines.append(b"Retry-After: %d" % answer.retry_after)
    if not keep_alive:
        lines.append(b"Connection: close")
    elif http10:
        lines.append(b"Connection: keep-alive")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _result_call(
    app: web.Application, method: bytes, url: bytes, authorization: str
) -> Call | None:
    """The Call of a result post this server takes; None: aiohttp's."""
    if method != b"POST":
        return None
    match = _RESULT.fullmatch(url)
    if match is None:
        return None
    node, execution_id, query = match.groups()
    if node in _DOT_SEGMENTS or execution_id in _DOT_SEGMENTS:
        return None
    if query is not None and b"#" in query:
        return None
    path = url.partition(b"?")[0].decode()
    parsed = URL.build(query_string=query.decode(), encoded=True).query if query else _NO_QUERY
    return Call(
        app, _ROUTE, "POST", path, node.decode(), execution_id.decode(), parsed, authorization
    )


_NO_QUERY = URL("/").query


def _refused(call: Call, e: Exception, keep_alive: bool) -> tuple[Answer, bool]:
    """The answer to what `result` raised, and whether the connection stays open."""
    refused = refusal(e)
    if refused is None:
        log.error("Error handling request %s %s", call.method, call.path, exc_info=e)
        return _INTERNAL_ERROR, False
    return refused, keep_alive


_INTERNAL_ERROR = Answer(
    500,
    "500 Internal Server Error\n\nServer got itself in trouble",
)


class _Request:
    """One result post: its call, and its body as it arrives."""

    __slots__ = (
        "answer",
        "body",
        "call",
        "expect_continue",
        "failure",
        "keep_alive",
        "limit",
        "parts",
        "size",
        "version",
        "waiter",
    )

    def __init__(self, call: Call | None, version: bytes, keep_alive: bool, limit: int) -> None:
        self.call = call
        self.version = version
        self.keep_alive = keep_alive
        self.expect_continue = False
        self.parts: list[bytes] = []
        self.size = 0
        self.body: bytes | None = None
        self.failure: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.limit = limit
        self.answer: Answer | None = None  # set: answered without running `result` (400)

    @property
    def complete(self) -> bool:
        return self.body is not None or self.failure is not None

    def finish(self, body: bytes | None, failure: BaseException | None = None) -> None:
        if self.complete:
            return
        self.body, self.failure = body, failure
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def too_large(self) -> None:
        self.finish(None, web.HTTPRequestEntityTooLarge(max_size=self.limit, actual_size=self.size))

    async def read(self) -> bytes:
        if not self.complete:
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        if self.failure is not None:
            raise self.failure
        assert self.body is not None
        return self.body


class _Mode(enum.Enum):
    FIRST = 1  # the first request's head is not complete: the bytes are kept
    FAST = 2  # result posts served here
    RELAY = 3  # re-serializing requests for aiohttp until a message boundary
    RAW = 4  # every byte to aiohttp
    DONE = 5  # reading nothing more: the connection closes once its answers are written


class _Handover(Exception):
    """Raised from a parser callback: the connection's first request is aiohttp's."""


class _Stop(Exception):
    """Raised from a parser callback: read nothing more on this connection."""


class _Connection(asyncio.Protocol):
    """One TCP connection of the callback port, while it is (or may be) the fast path's."""

    def __init__(self, site: FastResultSite) -> None:
        self.site = site
        self.app = site.app
        self.limit = site.app[BODY_LIMIT]
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.mode = _Mode.FIRST
        self.raw = bytearray()  # FIRST: everything received
        # the message being parsed
        self.in_message = False
        self.headers_done = False
        self.url = bytearray()
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_size = 0
        self.current: _Request | None = None  # FAST: the result post being received
        self.relaying_chunked = False  # RELAY: the message being relayed is chunked
        # answering
        self.queue: collections.deque[_Request] = collections.deque()
        self.task: asyncio.Task[None] | None = None  # answering queued requests
        self.active = self.loop.time()  # when data last came (the keep-alive timeout)
        self.busy = False  # a request is being answered
        self.writable: asyncio.Future[None] | None = None  # set while writing is paused
        self.reading_paused = False
        self.closing = False  # shutting down: answer what is in flight, then close
        self.lost = False
        self.idle_timer: asyncio.TimerHandle | None = None
        # aiohttp
        self.aiohttp: asyncio.Protocol | None = None
        self.relay_out: list[bytes] = []
        self.relay_size = 0
        self.eof = False  # the client half-closed before aiohttp took over

    # ------------------------------------------------------------ transport events
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a TCP transport
        self.site.connections.add(self)
        self._arm_idle_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.task is None:  # else the site still owns the connection until it ends
            self.site.connections.discard(self)
        self._cancel_idle_timer()
        if self.current is not None:
            self.current.finish(None, ConnectionResetError("Connection lost"))
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)
        self._wake()
        if self.aiohttp is not None:
            self.aiohttp.connection_lost(exc)

    def eof_received(self) -> bool | None:
        if self.aiohttp is not None:
            return self.aiohttp.eof_received()
        if self.mode is _Mode.FIRST and self.raw:
            self._handover_first()  # aiohttp answers an incomplete request
            assert self.aiohttp is not None
            return self.aiohttp.eof_received()
        if self.mode is _Mode.RELAY or self.mode is _Mode.RAW:
            self.eof = True  # told to aiohttp once the earlier answers are written
            return True
        self.mode = _Mode.DONE
        if self.current is not None:  # its body can no longer come
            self.current.finish(None, ConnectionResetError("Connection lost"))
            self.current = None
        if self.queue or self.busy:
            self._wake()
            return True  # half-closed: the answers in flight are still written
        return None

    def pause_writing(self) -> None:
        if self.aiohttp is not None:
            self.aiohttp.pause_writing()
            return
        if self.writable is None or self.writable.done():
            self.writable = self.loop.create_future()

    def resume_writing(self) -> None:
        if self.aiohttp is not None:
            self.aiohttp.resume_writing()
            return
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.active = self.loop.time()
        mode = self.mode
        if mode is _Mode.RAW:
            self._to_aiohttp(data)
            return
        if mode is _Mode.DONE:
            return
        if mode is _Mode.FIRST:
            self.raw += data
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as e:
            cause = e.__context__
            if isinstance(cause, _Handover):
                self._handover_first()
                return
            elif isinstance(cause, _Stop):
                if self.mode is not _Mode.RAW:
                    self.mode = _Mode.DONE
            else:
                raise
        except httptools.HttpParserUpgrade as e:
            # FIRST has handed over in on_headers_complete; RELAY relays the upgrade
            if self.mode is _Mode.RELAY:
                self._to_aiohttp(data[int(e.args[0]) :])
                self.mode = _Mode.RAW
        except httptools.HttpParserError as e:
            if self.mode is _Mode.FIRST:
                self._handover_first()  # aiohttp answers it as it answers any bad request
                return
            self._parse_error(e)
        if self.mode is _Mode.RELAY and not self.in_message:
            self.mode = _Mode.RAW  # at a boundary: the rest goes as it comes
        if self.mode is _Mode.RAW and self.aiohttp is not None:
            self._leave()
        self._wake()

    def _parse_error(self, e: httptools.HttpParserError) -> None:
        if self.mode is _Mode.RELAY:
            self._to_aiohttp(b"\x00 bad request\r\n\r\n")  # aiohttp answers 400, closes
            self.mode = _Mode.RAW
            return
        reason = " ".join(str(e).split())[:300] or type(e).__name__
        self._refuse(f"malformed request: {reason}")

    def _refuse(self, text: str) -> None:
        """400 after the earlier answers, then close (FAST)."""
        self.mode = _Mode.DONE
        if self.current is not None:  # its body is malformed: `result` answers 400
            self.current.finish(None, web.RequestPayloadError(text))
            self.current = None
            return
        bad = _Request(None, b"1.1", False, self.limit)
        bad.answer = Answer(400, text + "\n")
        self.queue.append(bad)

    # -------------------------------------------------------------- parser events
    def on_message_begin(self) -> None:
        if self.closing and self.mode is _Mode.FAST:
            raise _Stop
        self.in_message = True
        self.headers_done = False
        self.url.clear()
        self.headers.clear()
        self.head_size = 0

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_size += len(url)
        if self.head_size > MAX_HEAD:
            self._head_too_large()

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.headers_done:
            return  # a trailer of a chunked body: dropped, as aiohttp does
        self.headers.append((name, value))
        self.head_size += len(name) + len(value) + 4
        if self.head_size > MAX_HEAD:
            self._head_too_large()

    def _head_too_large(self) -> None:
        if self.mode is _Mode.FIRST:
            raise _Handover  # aiohttp refuses it as it refuses any head too large
        if self.mode is _Mode.RELAY:
            self._to_aiohttp(b"\x00 bad request\r\n\r\n")  # aiohttp answers 400, closes
            self.mode = _Mode.RAW
            raise _Stop
        self._refuse(f"malformed request: head over {MAX_HEAD} bytes")
        raise _Stop

    def on_headers_complete(self) -> None:
        self.headers_done = True
        parser = self.parser
        version = parser.get_http_version().encode()
        if self.mode is _Mode.RELAY:
            self._relay_head(version)
            return
        call = None
        expect = content_length = chunked = authorization = None
        if not parser.should_upgrade():
            for name, value in self.headers:
                lower = name.lower()
                if lower == b"authorization":
                    authorization = value
                elif lower == b"expect":
                    expect = value
                elif lower == b"content-length":
                    content_length = value
                elif lower == b"transfer-encoding":
                    chunked = value
            plain = (
                version in (b"1.1", b"1.0")
                and (expect is None or expect.lower() == b"100-continue")
                and (chunked is None or (content_length is None and chunked.lower() == b"chunked"))
            )
            if plain:
                auth = authorization.decode("latin-1") if authorization is not None else ""
                call = _result_call(self.app, parser.get_method(), bytes(self.url), auth)
        if call is None:
            if self.mode is _Mode.FIRST:
                raise _Handover
            self.mode = _Mode.RELAY  # a later request of another kind: aiohttp's from here
            self._relay_head(version)
            return
        if self.mode is _Mode.FIRST:
            self.mode = _Mode.FAST
            self.raw = bytearray()
        request = _Request(call, version, parser.should_keep_alive(), self.limit)
        request.expect_continue = expect is not None
        self.queue.append(request)
        if len(self.queue) > _MAX_QUEUED and not self.reading_paused:
            self.reading_paused = True
            assert self.transport is not None
            self.transport.pause_reading()
        if content_length is not None and int(content_length) >= self.limit:
            request.too_large()  # the body is not read: the connection closes after
            raise _Stop
        self.current = request

    def on_body(self, body: bytes) -> None:
        request = self.current
        if request is not None:
            request.size += len(body)
            if request.size >= self.limit:
                request.too_large()
                self.current = None
                raise _Stop
            request.parts.append(body)
        elif self.mode is _Mode.RELAY:
            if self.relaying_chunked:
                self._to_aiohttp(b"%x\r\n" % len(body) + body + b"\r\n")
            else:
                self._to_aiohttp(body)

    def on_message_complete(self) -> None:
        self.in_message = False
        request = self.current
        if request is not None:
            self.current = None
            parts = request.parts
            request.parts = []
            request.finish(parts[0] if len(parts) == 1 else b"".join(parts))
            if (
                self.task is None
                and not self.busy
                and len(self.queue) == 1  # this request: nothing to answer before it
                and self.mode is _Mode.FAST
                and (self.writable is None or self.writable.done())
            ):
                assert request.call is not None
                request.call.body = request.body
                self.queue.pop()
                self.busy = True
                self.site.answer_soon(self, request)
        elif self.mode is _Mode.RELAY and self.relaying_chunked:
            self._to_aiohttp(b"0\r\n\r\n")
            self.relaying_chunked = False

    # ------------------------------------------------------------------ answering
    def _wake(self) -> None:
        """Answer what is queued, unless that is under way (the task answers all that is
        queued before it ends; busy without a task: the site is answering a whole post);
        with nothing queued, hand over, close or idle."""
        if self.task is not None or self.lost or self.busy:
            return
        if self.queue:
            self.task = self.loop.create_task(self._answer_all())
            self.task.add_done_callback(self._answered_all)
        else:
            self._settle()

    def _answered_all(self, task: asyncio.Task[None]) -> None:
        self.task = None
        if self.lost:
            self.site.connections.discard(self)
        error = None if task.cancelled() else task.exception()
        if error is not None:
            self.failed(error)
            return
        self._wake()  # requests that came meanwhile, else hand over, close or idle

    def failed(self, error: BaseException) -> None:
        """Answering failed (a bug): logged, and the connection closes."""
        log.error("result fast path failed", exc_info=error)
        if self.transport is not None:
            self.transport.close()

    async def _answer_all(self) -> None:
        """Answer the queued result posts in order (the connection's one task while it
        has any: an idle connection has none, so its next whole post can be answered
        with the others of its loop iteration); until the queue is empty, the
        connection is lost or closes."""
        while self.queue and not self.lost:
            request = self.queue[0]
            self.busy = True
            try:
                keep_open = await self._answer(request)
            finally:
                self.busy = False
            self.queue.popleft()
            if self.reading_paused and len(self.queue) < _MAX_QUEUED // 4 and not self.lost:
                self.reading_paused = False
                assert self.transport is not None
                self.transport.resume_reading()
            if not keep_open:
                self.mode = _Mode.DONE
                self.queue.clear()
                return

    async def _answer(self, request: _Request) -> bool:
        """Write the request's answer; whether the connection stays open."""
        transport = self.transport
        assert transport is not None
        if request.answer is not None:  # malformed: not a callback, not counted
            await self._write(_serialize(request.answer, request.version, False, False))
            return False
        call = request.call
        assert call is not None
        self.site.served += 1
        if request.body is not None:
            call.body = request.body
        elif request.expect_continue and request.failure is None:
            transport.write(_CONTINUE)
        keep_alive = request.keep_alive
        code = 500
        try:
            try:
                answer = await result(call, request.read)
            except web.HTTPException as e:  # 413 from read(): the rest is not read
                answer, keep_alive = Answer(e.status, e.text or ""), False
            except ConnectionResetError as e:
                code = client_gone(call.method, call.path, e)
                return False
            except Exception as e:
                answer, keep_alive = _refused(call, e, keep_alive)
            code = answer.status
        finally:
            call.app[METRICS].count_callback(_ROUTE, code)
        keep_alive = self._keeps_alive(keep_alive, queued=1)
        await self._write(
            _serialize(answer, request.version, keep_alive, request.version == b"1.0")
        )
        return keep_alive

    def answer_now(self, request: _Request, outcome: Answer | Exception | None) -> None:
        """The site answered a whole result post with the others of its event-loop
        iteration (`results_now`); None: this connection's task answers it after all."""
        self.busy = False
        if outcome is None:
            self.queue.appendleft(request)
            self._wake()
            return
        call = request.call
        assert call is not None and self.transport is not None
        self.site.served += 1
        keep_alive = request.keep_alive
        if isinstance(outcome, Exception):
            answer, keep_alive = _refused(call, outcome, keep_alive)
        else:
            answer = outcome
        call.app[METRICS].count_callback(_ROUTE, answer.status)
        keep_alive = self._keeps_alive(keep_alive, queued=0)
        if not self.lost:
            self.transport.write(
                _serialize(answer, request.version, keep_alive, request.version == b"1.0")
            )
        if not keep_alive:
            self.mode = _Mode.DONE
            self.queue.clear()
        self._wake()  # the requests that came meanwhile, else close or idle

    def _keeps_alive(self, keep_alive: bool, queued: int) -> bool:
        """Whether an answer keeps the connection open; `queued`: the answered request
        is still in the queue (1) or not (0)."""
        last = self.mode is _Mode.DONE and len(self.queue) == queued
        return keep_alive and not self.closing and not last

    async def _write(self, data: bytes) -> None:
        if self.writable is not None and not self.writable.done():
            await self.writable
        if not self.lost:
            assert self.transport is not None
            self.transport.write(data)

    def _settle(self) -> None:
        """Nothing is being answered: hand over, close, or wait for the next request."""
        if self.lost or self.transport is None:
            return
        if self.mode is _Mode.RELAY or self.mode is _Mode.RAW:
            self._attach_aiohttp()
            return
        if self.mode is _Mode.DONE or self.closing:
            self.transport.close()

    # ------------------------------------------------------------ idle keep-alive
    def _arm_idle_timer(self, delay: float = KEEPALIVE_TIMEOUT_S) -> None:
        self.idle_timer = self.loop.call_later(delay, self._idle_timeout)

    def _cancel_idle_timer(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None

    def _idle_timeout(self) -> None:
        """One timer per connection, moved on lazily (no timer work per request)."""
        self.idle_timer = None
        idle_for = self.loop.time() - self.active
        if self.queue or self.busy or self.in_message or idle_for < KEEPALIVE_TIMEOUT_S:
            self._arm_idle_timer(max(KEEPALIVE_TIMEOUT_S - idle_for, 1.0))
        elif self.transport is not None:
            self.transport.close()

    def shutdown(self) -> None:
        """Close when idle; a request in flight is answered first (with Connection: close)."""
        self.closing = True
        if self.aiohttp is not None or self.mode is _Mode.RELAY or self.mode is _Mode.RAW:
            return  # aiohttp's (or about to be)
        if self.queue or self.busy:
            return  # closes after its answers
        if self.transport is not None:
            self.transport.close()

    # -------------------------------------------------------------------- handover
    def _new_aiohttp(self) -> asyncio.Protocol:
        server = self.site.aiohttp_server
        protocol: asyncio.Protocol = server()
        assert self.transport is not None
        protocol.connection_made(self.transport)
        return protocol

    def _handover_first(self) -> None:
        """The first request is aiohttp's: the connection is, with every byte so far."""
        assert self.transport is not None
        self._cancel_idle_timer()
        self.mode = _Mode.RAW
        self.site.connections.discard(self)
        protocol = self.aiohttp = self._new_aiohttp()
        self.transport.set_protocol(protocol)
        data, self.raw = bytes(self.raw), bytearray()
        if data:
            protocol.data_received(data)

    def _relay_head(self, version: bytes) -> None:
        method = self.parser.get_method()
        lines = [b"%s %s HTTP/%s" % (method, bytes(self.url), version)]
        lines += [name + b": " + value for name, value in self.headers]
        self.relaying_chunked = any(
            name.lower() == b"transfer-encoding" and b"chunked" in value.lower()
            for name, value in self.headers
        )
        self._to_aiohttp(b"\r\n".join(lines) + b"\r\n\r\n")

    def _to_aiohttp(self, data: bytes) -> None:
        if self.aiohttp is not None:
            self.aiohttp.data_received(data)
            return
        self.relay_out.append(data)
        self.relay_size += len(data)
        if self.relay_size > _MAX_RELAY_BUFFER and not self.reading_paused:
            self.reading_paused = True
            assert self.transport is not None
            self.transport.pause_reading()

    def _attach_aiohttp(self) -> None:
        """Every earlier answer is written: aiohttp takes the rest of the connection."""
        if self.aiohttp is not None:
            return
        self.site.connections.discard(self)
        self._cancel_idle_timer()
        self.aiohttp = self._new_aiohttp()
        if self.reading_paused:
            self.reading_paused = False
            assert self.transport is not None
            self.transport.resume_reading()
        out, self.relay_out, self.relay_size = self.relay_out, [], 0
        for data in out:
            self.aiohttp.data_received(data)
        if self.eof and not self.aiohttp.eof_received():
            assert self.transport is not None
            self.transport.close()
            return
        if self.mode is _Mode.RAW:
            self._leave()

    def _leave(self) -> None:
        """At a message boundary with aiohttp attached: the transport talks to it directly."""
        assert self.transport is not None and self.aiohttp is not None
        self.transport.set_protocol(self.aiohttp)


class FastResultSite(web.TCPSite):
    """A TCP site for the callback app: result posts on the fast path, the rest on aiohttp."""

    def __init__(
        self,
        runner: web.AppRunner,
        host: str | None,
        port: int,
        *,
        grace_s: float,
        reuse_address: bool | None = None,
    ) -> None:
        super().__init__(runner, host, port, reuse_address=reuse_address)
        self.app = runner.app
        self.grace_s = grace_s
        self.connections: set[_Connection] = set()
        #: Whole result posts of this event-loop iteration, answered together next.
        self.inbox: list[tuple[_Connection, _Request]] = []
        self.served = 0  # result posts answered here (the tests tell the servers apart)

    def answer_soon(self, connection: _Connection, request: _Request) -> None:
        """Answer a whole result post together with the others whose bodies come whole
        in this event-loop iteration: one `results_now` for all, once the loop has read
        every ready connection."""
        if not self.inbox:
            asyncio.get_running_loop().call_soon(self._answer_inbox)
        self.inbox.append((connection, request))

    def _answer_inbox(self) -> None:
        inbox, self.inbox = self.inbox, []
        if not inbox:
            return  # answered by stop()
        calls = []
        for _, request in inbox:
            assert request.call is not None  # a result post
            calls.append(request.call)
        try:
            outcomes = results_now(self.app, calls)
        except Exception as e:  # results_now answers each post: a bug, answered 500
            outcomes = [e] * len(inbox)
        for (connection, request), outcome in zip(inbox, outcomes, strict=True):
            try:
                connection.answer_now(request, outcome)
            except Exception as e:  # the others are still answered
                connection.failed(e)

    @property
    def aiohttp_server(self) -> Callable[[], asyncio.Protocol]:
        server = self._runner.server
        assert server is not None
        return server

    async def start(self) -> None:
        await BaseSite.start(self)  # registers the site with the runner
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Connection(self),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
        )
        self._bound_port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """No new connections; answer what is in flight, close the rest (runner.cleanup)."""
        if self._server is not None:
            self._server.close()
        self._answer_inbox()  # whole posts waiting for the loop's next turn
        connections = list(self.connections)
        for connection in connections:
            connection.shutdown()
        tasks = [c.task for c in connections if c.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await super().stop()
