"""The callback API job pods talk to (the Go controller's routes): results, files and events.

`POST /report/{node}/{executionID}/result|file|event`, with the Go controller's status
codes and body prefixes, and `GET /openapi.json`, the API's OpenAPI document. Handlers
are small: admit the request (known node and execution, token, current attempt),
decode with msgspec, hand the data to the report store, the metrics and the controller
(`CallbackTarget`), answer. The result route is one function, `result` (with `refusal`
and `client_gone` for what it raises), called by the aiohttp handler and by
bjc.web.fastresult, which answers result posts on the same port without aiohttp;
`results_now` is the same steps (`_admitted`, `_checked`, the log, `_applied`) for the
whole posts of one event-loop iteration at once.

Attempts are fenced: a retry's URLs carry `?retry=N` (the first attempt's carry
nothing, as the Go controller's), and a callback of an attempt the controller has
given up on (retried, timed out, deleted) is refused with 409 and why, and counted
by route and reason. The fence is checked when a request is admitted and, when its
body came after that, again just before its result or files land, so a pod in its
termination grace period cannot replace what its retry reported, even with an upload
that started in time. (A result whose body had come whole is admitted and appended
with nothing awaited in between: one check is the same check.)

Job pods are only partly trusted, so every request has a cost bound before work
starts and every malformed body is a 4xx with the reason (a 5xx means bjc or the
apiserver failed, never the input):
- uploads are streamed to disk through `ReportStore.upload` (never held whole in
  memory) and capped by `maxUploadSize` (413); names are checked by the store, and a
  final name the uploading node does not own (`bjc.reports.store.file_owner`: another node's
  result, uploads or pod logs, or the controller's files) is refused (400);
- result and event bodies are read whole, capped by the same limit through aiohttp's
  `client_max_size`; events also by `EVENT_MAX_BYTES` (their note is cut to 1 KiB);
- results are checked against the series limits (`check_limits`) before anything
  is written; JSON nested too deeply or not UTF-8 is a decoding error (400);
- a body aiohttp cannot parse (multipart part headers) is 400; a client that
  disconnects mid-request is logged as one INFO line and counted with code 499;
- a result or file the report directory cannot take (`WriteFailed`: full, read-only,
  I/O error) is 507 (no space) or 503, both with `Retry-After` and the errno in the
  body, and nothing of it is kept: the job retries, and the store has logged the
  condition once (no line per request).

Deliberately not here: knowing which executions exist, creating Kubernetes objects
(the target does that), and serving anything but these routes. `bjc mock` runs this
same app with a store that keeps nothing.
"""

from __future__ import annotations

import logging
import mimetypes
import uuid
import warnings
from collections.abc import Awaitable, Callable, Container, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from importlib import resources
from typing import Protocol

import msgspec
from aiohttp import BodyPartReader, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.multipart import (
    BadContentDispositionHeader,
    BadContentDispositionParam,
    content_disposition_filename,
    parse_content_disposition,
)
from multidict import MultiMapping

from bjc.config.podspec import RETRY_PARAM
from bjc.config.settings import Config
from bjc.kube.events import EventRequest, PodNotFound, decode_event
from bjc.reports.execution import Stale
from bjc.reports.results import (
    Result,
    ResultMetrics,
    ResultSeries,
    apply_result,
    check_limits,
    check_names,
    decode_result,
)
from bjc.reports.store import (
    CONTROLLER,
    ExecutionNotFound,
    NotLeading,
    ReportStore,
    UploadTooLarge,
    WriteFailed,
    check_name,
    file_owner,
)

log = logging.getLogger(__name__)

NOT_ALLOWED = "node / execution ID not allowed"
_CHUNK = 256 * 1024
#: Event bodies over this are refused (413): the note is cut to 1 KiB anyway, and the
#: cost of formatting grows with the message and its arguments.
EVENT_MAX_BYTES = 64 * 1024
#: Counted for requests whose client went away before an answer (nginx's convention).
CLIENT_CLOSED = 499
OPENAPI = resources.files("bjc.web").joinpath("openapi.json").read_bytes()


class CallbackTarget(Protocol):
    """What the controller answers for the callback API."""

    def execution_allowed(self, node: str, execution_id: str) -> bool: ...

    def nodes_of(self, execution_id: str) -> Container[str] | None:
        """The nodes of an execution (who owns which file names); None when unknown."""
        ...

    def token_valid(self, node: str, execution_id: str, token: str, attempt: int) -> bool:
        """Whether `token` is the one of the node's `attempt` (0: the first)."""
        ...

    def stale(self, node: str, execution_id: str, attempt: int) -> Stale | None:
        """Why callbacks of the node's `attempt` are refused now (409); None: accepted."""
        ...

    def result_received(self, node: str, execution_id: str) -> None: ...

    async def create_event(self, node: str, execution_id: str, event: EventRequest) -> None:
        """Create the Kubernetes Event; raise bjc.kube.events.PodNotFound if the job pod is gone."""
        ...


class CallbackMetrics(ResultMetrics, Protocol):
    """The part of bjc.reports.metrics.Metrics the callback API uses."""

    def set_processing(self, execution_id: str, node: str, value: float) -> None: ...

    def count_callback(self, route: str, code: int) -> None: ...

    def count_stale_callback(self, route: str, reason: str) -> None: ...


CONFIG: web.AppKey[Callable[[], Config]] = web.AppKey("config")
STORE = web.AppKey("store", ReportStore)
METRICS = web.AppKey("metrics", CallbackMetrics)
TARGET = web.AppKey("target", CallbackTarget)
DEV_MODE = web.AppKey("dev_mode", bool)
ACCEPTING: web.AppKey[Callable[[], bool]] = web.AppKey("accepting")
#: Whether `bjc.web.serve` puts the result fast path (bjc.web.fastresult) in front of the app.
FAST_RESULTS = web.AppKey("fast_results", bool)
#: The body cap of result and event bodies: the app's `client_max_size`.
BODY_LIMIT = web.AppKey("body_limit", int)

NOT_LEADING = "not the leader: retry (the callback Service sends you to the leader)"
#: Retry-After (seconds) of a callback the report directory could not take
NOT_WRITABLE_RETRY_AFTER = 10
#: The body prefix of a 409: the callback's attempt is not (or no longer) the current one.
STALE = "stale attempt"
_MAX_RETRY_DIGITS = 9


@dataclass(slots=True, frozen=True)
class Answer:
    """A callback's answer, served by aiohttp (`_response`) or by the result fast path.

    `text` is Go's http.Error body (text/plain, message plus newline); "" is no body.
    """

    status: int
    text: str = ""
    retry_after: int | None = None


OK = Answer(200)


def _text(status: int, text: str) -> Answer:
    return Answer(status, text + "\n")


def _response(answer: Answer) -> web.Response:
    if not answer.text:
        return web.Response(status=answer.status)
    response = web.Response(status=answer.status, text=answer.text, content_type="text/plain")
    if answer.retry_after is not None:
        response.headers[hdrs.RETRY_AFTER] = str(answer.retry_after)
    return response


def _not_writable(error: WriteFailed) -> Answer:
    """507 when the report directory is full, else 503; the job retries either."""
    status = 507 if error.no_space else 503
    reason = f"report directory not writable ({error.code}: {error.strerror or error}); retry later"
    return Answer(status, reason + "\n", NOT_WRITABLE_RETRY_AFTER)


class _Refused(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.answer = Answer(status, text + "\n", 1 if status == 503 else None)


@dataclass(slots=True)
class Call:
    """What admission needs of a callback request: from aiohttp's request (`_call`) or
    from the result fast path, which parses requests itself."""

    app: web.Application
    route: str
    method: str
    path: str
    node: str
    execution_id: str
    query: MultiMapping[str]
    authorization: str
    #: The whole body, when it had come before the request was admitted (the fast path):
    #: nothing can change between admission and the write, so the fence is not checked
    #: again.
    body: bytes | None = None


def _call(request: web.Request) -> Call:
    info = request.match_info
    return Call(
        request.app,
        info.route.name or "other",
        request.method,
        request.path,
        info["node"],
        info["executionID"],
        request.query,
        request.headers.get(hdrs.AUTHORIZATION, ""),
    )


def _bearer(call: Call) -> str:
    token = call.query.get("token", "")
    if token:
        return token
    scheme, _, value = call.authorization.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def _attempt(call: Call) -> int:
    """The attempt a callback comes from: N for `?retry=N`, 0 (the first) without it."""
    query = call.query
    if not query:
        return 0
    values = query.getall(RETRY_PARAM, [])
    if not values:
        return 0
    value = values[0]
    if (
        len(values) > 1
        or not value.isascii()
        or not value.isdigit()
        or value.startswith("0")
        or len(value) > _MAX_RETRY_DIGITS
    ):
        shown = values[0][:40] if len(values) == 1 else f"{len(values)} values"
        raise _Refused(
            400,
            f"invalid {RETRY_PARAM} {shown!r}: expected the number the controller put into "
            "the callback URL (a positive integer, given once)",
        )
    return int(value)


def check_current(call: Call, attempt: int) -> None:
    """_Refused with 409 unless the node's `attempt` may (still) call back; counted."""
    target = call.app[TARGET]
    if target.execution_allowed(call.node, call.execution_id):
        _fence(call, target, attempt)
    # else DEV_MODE's unknown executions have no attempts; or pruned: 406 follows


def _fence(call: Call, target: CallbackTarget, attempt: int) -> None:
    """check_current of a node and execution known to be allowed."""
    stale = target.stale(call.node, call.execution_id, attempt)
    if stale is None:
        return
    call.app[METRICS].count_stale_callback(call.route, stale.kind)
    log.info("%s %s refused: %s", call.method, call.path, stale.reason)
    raise _Refused(409, f"{STALE}: {stale.reason}")


@dataclass(slots=True)
class _Parts:
    """What admitting and taking a result needs of the app: looked up once per request,
    and once per batch of `results_now` (a lookup in an aiohttp app is a Python call)."""

    accepting: Callable[[], bool]
    target: CallbackTarget
    dev_mode: bool
    config: Config
    metrics: CallbackMetrics
    store: ReportStore

    @classmethod
    def of(cls, app: web.Application) -> _Parts:
        return cls(
            app[ACCEPTING], app[TARGET], app[DEV_MODE], app[CONFIG](), app[METRICS], app[STORE]
        )


def _admitted(call: Call, parts: _Parts) -> tuple[int, bool]:
    """The attempt of an acceptable request and whether its execution is known (the
    fence is checked then), else _Refused with 503/406/401/400/409. Awaits nothing."""
    if not parts.accepting():
        raise _Refused(503, NOT_LEADING)
    node = call.node
    execution_id = call.execution_id
    target = parts.target
    allowed = target.execution_allowed(node, execution_id)
    if not allowed and not parts.dev_mode:
        raise _Refused(406, NOT_ALLOWED)
    attempt = _attempt(call)
    if parts.config.callback_auth == "token" and allowed:
        # DEV_MODE accepts unknown executions without a token; known ones still need it.
        if not target.token_valid(node, execution_id, _bearer(call), attempt):
            raise _Refused(401, "missing or invalid token")
    try:
        ReportStore.result_filename(node)  # the node's name, and its file names must fit
        check_name(execution_id, "execution ID")
    except ValueError as e:
        raise _Refused(400, str(e)) from None
    if node.startswith("."):  # DEV_MODE: Kubernetes node names never start with "."
        raise _Refused(400, f"node {node!r} must not start with '.' (hidden names are bjc's)")
    if allowed:
        _fence(call, target, attempt)
    return attempt, allowed


async def _admit(call: Call, parts: _Parts | None = None) -> int:
    """`_admitted`, and a directory for DEV_MODE's unknown execution (no attempts)."""
    parts = parts or _Parts.of(call.app)
    attempt, allowed = _admitted(call, parts)
    if not allowed:
        await parts.store.ensure_execution(call.execution_id)
    return attempt


# ----------------------------------------------------------------------- result
async def result(call: Call, read: Callable[[], Awaitable[bytes]]) -> Answer:
    """The result route, for aiohttp (`post_result`) and the fast path alike.

    `read` gives the whole body; it raises web.HTTPRequestEntityTooLarge at BODY_LIMIT
    and ConnectionResetError when the client went away. Raises _Refused and
    WriteFailed (see `refusal`). `results_now` is the same route for result posts whose
    bodies came whole, answered together.
    """
    parts = _Parts.of(call.app)
    attempt = await _admit(call, parts)
    received = call.body  # the fast path: the body came whole before admission
    if received is None:
        body = await read()
        parts = _Parts.of(call.app)  # a reload while the body came applies to it
    else:
        body = received
    checked = _checked(call, body, parts)
    if isinstance(checked, Answer):
        return checked
    if received is None:
        check_current(call, attempt)  # given up while the body came
    try:
        # in the results log on return: durable (as `durability` says)
        await parts.store.write_result(call.execution_id, call.node, body, attempt=attempt)
    except ExecutionNotFound:
        return _text(406, NOT_ALLOWED)
    except NotLeading:
        raise _Refused(503, NOT_LEADING) from None
    return _applied(call, checked, parts)


_Checked = tuple[Result, ResultSeries]


def _checked(call: Call, body: bytes, parts: _Parts) -> _Checked | Answer:
    """The decoded result and the series it sets, or the 400 that refuses it."""
    config, metrics = parts.config, parts.metrics
    try:
        decoded = decode_result(body)
    except msgspec.DecodeError as e:
        return _text(400, f"error decoding result: {e}")
    try:
        check_names(config, decoded)
        return decoded, check_limits(metrics, config, call.execution_id, call.node, decoded)
    except ValueError as e:
        return _text(400, f"invalid result: {e}")


def _applied(call: Call, checked: _Checked, parts: _Parts) -> Answer:
    """A logged result reaches the metrics and the controller."""
    node, execution_id, metrics = call.node, call.execution_id, parts.metrics
    try:
        apply_result(metrics, execution_id, node, *checked)
    except (KeyError, ValueError) as e:
        return _text(400, f"invalid result: {e}")
    metrics.set_processing(execution_id, node, 0)
    parts.target.result_received(node, execution_id)
    return OK


def results_now(app: web.Application, calls: Sequence[Call]) -> list[Answer | Exception | None]:
    """`result` for result posts whose bodies came whole (`Call.body`), all at once and
    awaiting nothing: the fast path hands over the posts of one event-loop iteration,
    and each execution's log gets one append for all of them (no future, task or
    thread per result).

    Each call's outcome, in order: its answer, what `result` would have raised (see
    `refusal`), or None when it needs `result` after all: DEV_MODE's unknown
    execution (its directory is made first) and `durability: fsync` (the append waits
    for a thread).
    """
    outcomes: list[Answer | Exception | None] = [None] * len(calls)
    parts = _Parts.of(app)
    store = parts.store
    if store.fsync:
        return outcomes
    # execution -> its admitted posts: (index, (node, attempt, body), checked)
    admitted: dict[str, list[tuple[int, tuple[str, int, bytes], _Checked]]] = {}
    for i, call in enumerate(calls):
        body = call.body
        try:
            attempt, allowed = _admitted(call, parts)
            if not allowed or body is None:
                continue
            checked = _checked(call, body, parts)
        except Exception as e:
            outcomes[i] = e
            continue
        if isinstance(checked, Answer):
            outcomes[i] = checked
        else:
            post = (i, (call.node, attempt, body), checked)
            admitted.setdefault(call.execution_id, []).append(post)
    for execution_id, posts in admitted.items():
        try:
            # in the results log on return: durable (as `durability` says)
            store.write_results_now(execution_id, [logged for _, logged, _ in posts])
        except Exception as e:
            failed: Answer | Exception = e
            if isinstance(e, ExecutionNotFound):
                failed = _text(406, NOT_ALLOWED)
            elif isinstance(e, NotLeading):
                failed = _Refused(503, NOT_LEADING)
            for i, _, _ in posts:
                outcomes[i] = failed
            continue
        for i, _, checked in posts:
            try:
                outcomes[i] = _applied(calls[i], checked, parts)
            except Exception as e:
                outcomes[i] = e
    return outcomes


async def post_result(request: web.Request) -> web.Response:
    return _response(await result(_call(request), request.read))


# ------------------------------------------------------------------------- file
def _check_owner(call: Call, name: str) -> None:
    """ValueError unless the upload's final name belongs to the uploading node."""
    node = call.node
    filename = ReportStore.upload_filename(node, name)
    nodes = call.app[TARGET].nodes_of(call.execution_id)
    owner = file_owner(filename, _WithNode(nodes, node))
    if owner == node:
        return
    if owner == CONTROLLER:
        raise ValueError(f"file name {filename!r} is reserved for bjc (pod logs, state)")
    raise ValueError(f"file name {filename!r} belongs to node {owner}")


class _WithNode:
    """The execution's nodes plus the uploading one (DEV_MODE: it may be unknown)."""

    def __init__(self, nodes: Container[str] | None, node: str) -> None:
        self.nodes = nodes
        self.node = node

    def __contains__(self, name: object) -> bool:
        return name == self.node or (self.nodes is not None and name in self.nodes)


def _disposition_filename(header: str) -> str | None:
    """The filename of a Content-Disposition header; ValueError when it is malformed."""
    with warnings.catch_warnings():  # aiohttp warns and carries on; a client error here
        warnings.simplefilter("error", BadContentDispositionHeader)
        warnings.simplefilter("error", BadContentDispositionParam)
        try:
            _, params = parse_content_disposition(header)
            return content_disposition_filename(params, "filename")
        except (BadContentDispositionHeader, BadContentDispositionParam, LookupError):
            raise ValueError(f"malformed Content-Disposition header {header!r}") from None


def _raw_upload_name(request: web.Request) -> str:
    """?name=, else Content-Disposition filename, else uuid + extension of the type."""
    name = request.query.get("name", "")
    if name:
        return name
    disposition = request.headers.get(hdrs.CONTENT_DISPOSITION)
    if disposition:
        filename = _disposition_filename(disposition)
        if filename:
            return filename
    return str(uuid.uuid4()) + _extension(request)


def _extension(request: web.Request) -> str:
    if hdrs.CONTENT_TYPE not in request.headers:
        return ".file"
    ctype = request.content_type
    if ctype == "text/plain":
        return ".txt"
    return mimetypes.guess_extension(ctype, strict=False) or ".file"


async def _stream_raw(request: web.Request, call: Call, attempt: int, limit: int) -> list[str]:
    name = _raw_upload_name(request)
    _check_owner(call, name)
    store = request.app[STORE]
    async with store.upload(call.execution_id, call.node, name, max_size=limit) as sink:
        async for chunk in request.content.iter_chunked(_CHUNK):
            await sink.write(chunk)
        check_current(call, attempt)  # else nothing lands
    return [sink.path.name]


async def _stream_multipart(
    request: web.Request, call: Call, attempt: int, limit: int
) -> list[str]:
    execution_id, node = call.execution_id, call.node
    store = request.app[STORE]
    reader = await request.multipart()
    total = 0
    saved: list[str] = []
    # All parts are staged as temporary files and renamed together at the end, so a
    # request that fails half-way (413, bad name) leaves nothing behind.
    async with AsyncExitStack() as stack:
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise ValueError("nested multipart bodies are not supported")
            disposition = part.headers.get(hdrs.CONTENT_DISPOSITION)
            filename = _disposition_filename(disposition) if disposition else None
            if not filename:
                await part.release()  # a plain form field, not a file
                continue
            _check_owner(call, filename)
            sink = await stack.enter_async_context(
                store.upload(execution_id, node, filename, max_size=limit - total)
            )
            while chunk := await part.read_chunk(_CHUNK):
                await sink.write(chunk)
            await sink.flush()  # to its temporary file: parts are not kept in memory
            total += sink.size
            saved.append(sink.path.name)
        if not saved:
            raise ValueError("multipart body contains no file")
        check_current(call, attempt)  # else none of them lands
    return saved


async def _file(request: web.Request) -> Answer:
    call = _call(request)
    attempt = await _admit(call)
    limit = request.app[CONFIG]().max_upload_size
    if request.content_length is not None and request.content_length > limit:
        return _text(413, f"request body exceeds the maximum upload size of {limit} bytes")
    try:
        if request.content_type.startswith("multipart/"):
            saved = await _stream_multipart(request, call, attempt, limit)
        else:
            saved = await _stream_raw(request, call, attempt, limit)
    except UploadTooLarge:
        return _text(413, f"request body exceeds the maximum upload size of {limit} bytes")
    except ExecutionNotFound:
        return _text(406, NOT_ALLOWED)
    except NotLeading:
        raise _Refused(503, NOT_LEADING) from None
    except ValueError as e:
        return _text(400, f"invalid upload: {e}")
    return _text(200, "\n".join(saved))


async def post_file(request: web.Request) -> web.Response:
    return _response(await _file(request))


# ------------------------------------------------------------------------ event
async def _event(request: web.Request) -> Answer:
    call = _call(request)
    await _admit(call)
    node, execution_id = call.node, call.execution_id
    body = await request.read()
    if len(body) > EVENT_MAX_BYTES:
        return _text(413, f"event body exceeds the maximum of {EVENT_MAX_BYTES} bytes")
    try:
        event = decode_event(body)
    except msgspec.DecodeError as e:
        return _text(400, f"error decoding event: {e}")
    except ValueError as e:
        return _text(400, f"invalid event: {e}")
    try:
        await request.app[TARGET].create_event(node, execution_id, event)
    except PodNotFound as e:
        return _text(404, f"error finding pod: {e}")
    except Exception as e:  # the apiserver refused or is unreachable
        log.warning("creating event for %s/%s failed: %s", node, execution_id, e)
        return _text(500, f"error creating event: {e}")
    return OK


async def post_event(request: web.Request) -> web.Response:
    return _response(await _event(request))


# ---------------------------------------------------------------------- wiring
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def refusal(e: Exception) -> Answer | None:
    """The answer to what a handler raised for its client's sake; None: a bug (500)."""
    if isinstance(e, _Refused):
        return e.answer
    if isinstance(e, WriteFailed):  # the store logged it once; nothing of the request is kept
        return _not_writable(e)
    if isinstance(e, (HttpProcessingError, web.RequestPayloadError)):  # multipart headers
        parsed = e if isinstance(e, HttpProcessingError) else e.__cause__
        reason = " ".join(str(getattr(parsed, "message", e)).split())[:300]
        return _text(400, f"malformed request body: {reason}")
    return None


def client_gone(method: str, path: str, e: BaseException) -> int:
    """Log a client that went away before its answer; the code it is counted with."""
    log.info("%s %s: client disconnected (%s)", method, path, e)
    return CLIENT_CLOSED


@web.middleware
async def _refusals_and_counting(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route.name or "other"
    code = 500
    try:
        response = await handler(request)
        code = response.status
        return response
    except web.HTTPException as e:  # 404/405 of the router, 413 of client_max_size
        code = e.status
        raise
    except ConnectionResetError as e:  # the client went away; nobody reads an answer
        code = client_gone(request.method, request.path, e)
        return web.Response(status=400)
    except Exception as e:
        answer = refusal(e)
        if answer is None:
            raise
        code = answer.status
        return _response(answer)
    finally:
        request.app[METRICS].count_callback(route, code)


async def get_openapi(request: web.Request) -> web.Response:
    return web.Response(body=OPENAPI, content_type="application/json")


def make_callback_app(
    config: Config | Callable[[], Config],
    store: ReportStore,
    metrics: CallbackMetrics,
    target: CallbackTarget,
    *,
    dev_mode: bool,
    accepting: Callable[[], bool] = lambda: True,
    fast_results: bool = True,
) -> web.Application:
    """The callback API as an aiohttp application (serve it on callbackServicePort).

    `config` is the configuration, or a function giving the current one (hot
    reload replaces it). While `accepting()` is false (a standby, or a leader still reloading) every
    callback is answered 503 with Retry-After: nothing is written. With `fast_results`,
    `bjc.web.serve` answers result posts on bjc.web.fastresult (the same `result`
    function) and hands every other request to this app; off for an app whose own
    middleware must see every request (`bjc mock`), and with BJC_FAST_RESULTS=0.
    """
    current = config if callable(config) else lambda: config
    limit = current().max_upload_size
    app = web.Application(client_max_size=limit, middlewares=[_refusals_and_counting])
    app[FAST_RESULTS] = fast_results
    app[BODY_LIMIT] = limit
    app[CONFIG] = current
    app[STORE] = store
    app[METRICS] = metrics
    app[TARGET] = target
    app[DEV_MODE] = dev_mode
    app[ACCEPTING] = accepting
    base = "/report/{node}/{executionID}"
    app.router.add_post(f"{base}/result", post_result, name="result")
    app.router.add_post(f"{base}/file", post_file, name="file")
    app.router.add_post(f"{base}/event", post_event, name="event")
    app.router.add_get("/openapi.json", get_openapi, name="openapi")
    return app
