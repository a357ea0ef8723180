"""The job-side client of the callback API: what a Python job calls instead of hand-written HTTP.

A job pod gets its callback URLs from the environment the controller sets
(`CALLBACK_SERVICE_RESULT_URL`, `..._FILE_URL`, `..._EVENT_URL`; with
`callbackAuth: token` they already carry `?token=...`). This module posts results,
files and events to them, retries what is worth retrying (connection errors,
timeouts, 5xx, 429) with exponential backoff, and turns every other refusal into
`Refused` carrying the server's one-line reason.

It is the counterpart of the Go controller's `pkg/client` and works against the Go
controller, bjc and `bjc mock` alike.

Deliberately standard library only (urllib), so `import bjc.client` is cheap in a job
image and never pulls in aiohttp, msgspec or the controller. Deliberately not here:
validating results or events (the server does that and says why in its 400), and
the `bjc report` command line (bjc.commands.report_cli).
"""

from __future__ import annotations

import http.client
import json
import logging
import mimetypes
import os
import random
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any, Literal
from urllib.parse import quote, urlsplit

__all__ = [
    "BACKOFF",
    "EVENT_URL_ENV",
    "FILE_URL_ENV",
    "MAX_BACKOFF",
    "RESULT_URL_ENV",
    "RETRIES",
    "TIMEOUT",
    "CallbackError",
    "Client",
    "NotConfigured",
    "Refused",
    "Unreachable",
    "event",
    "report",
    "upload",
]

log = logging.getLogger(__name__)

RESULT_URL_ENV = "CALLBACK_SERVICE_RESULT_URL"
FILE_URL_ENV = "CALLBACK_SERVICE_FILE_URL"
EVENT_URL_ENV = "CALLBACK_SERVICE_EVENT_URL"

#: defaults of `Client` (and of `bjc report`)
RETRIES = 6
BACKOFF = 1.0
MAX_BACKOFF = 30.0
TIMEOUT = 30.0

_TOKEN_RE = re.compile(r"([?&]token=)[^&#]*")


class CallbackError(Exception):
    """Base class: the callback could not be delivered."""


class NotConfigured(CallbackError):
    """A callback URL is missing or not an http(s) URL; nothing was sent."""


class Refused(CallbackError):
    """The server answered 4xx (other than 429): the request itself is wrong; not retried."""

    def __init__(self, url: str, status: int, reason: str) -> None:
        super().__init__(f"POST {_redact(url)}: {status} {reason}")
        self.url = url
        self.status = status
        #: the server's answer, e.g. "invalid event: reason is required"
        self.reason = reason


class Unreachable(CallbackError):
    """Every attempt failed with a connection error, a timeout, a 5xx or a 429."""

    def __init__(self, url: str, attempts: int, last: str, status: int | None) -> None:
        super().__init__(f"POST {_redact(url)}: gave up after {attempts} attempts: {last}")
        self.url = url
        self.attempts = attempts
        #: what the last attempt failed with, e.g. "503 error creating event: ..."
        self.last = last
        #: HTTP status of the last attempt, None if it got no answer
        self.status = status


def _redact(url: str) -> str:
    """The URL without its token value: fit for logs and exception messages."""
    return _TOKEN_RE.sub(r"\1***", url)


def _with_query(url: str, key: str, value: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}{key}={quote(value, safe='')}"


class _Retry(Exception):
    def __init__(self, reason: str, status: int | None = None, after: float | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.after = after


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


class Client:
    """Posts to the three callback URLs; `from_env()` reads them from the job pod environment.

    `retries` is the number of retries after the first attempt; the delay before
    retry n is `backoff * 2**(n-1)` seconds (with jitter, at most `max_backoff`, or
    the server's `Retry-After` if longer, within the same cap). `token` is sent as
    `Authorization: Bearer` for URLs that do not carry `?token=` themselves.
    """

    def __init__(
        self,
        result_url: str | None = None,
        file_url: str | None = None,
        event_url: str | None = None,
        *,
        token: str | None = None,
        retries: int = RETRIES,
        backoff: float = BACKOFF,
        max_backoff: float = MAX_BACKOFF,
        timeout: float = TIMEOUT,
    ) -> None:
        if retries < 0 or backoff < 0 or max_backoff < 0 or timeout <= 0:
            raise ValueError("retries, backoff and max_backoff must be >= 0, timeout > 0")
        self._urls = {RESULT_URL_ENV: result_url, FILE_URL_ENV: file_url, EVENT_URL_ENV: event_url}
        self.token = token
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.timeout = timeout

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> Client:
        """A client for the URLs in the (job pod) environment; `options` as for `Client`."""
        env = os.environ if environ is None else environ
        return cls(
            env.get(RESULT_URL_ENV) or None,
            env.get(FILE_URL_ENV) or None,
            env.get(EVENT_URL_ENV) or None,
            **options,
        )

    # ----------------------------------------------------------------- routes
    def report(self, results: Mapping[str, Any] | bytes | str | IO[bytes]) -> None:
        """Post the result: `{"<gauge suffix>": [{"value": 1.0, "labels": {...}}]}`.

        A mapping is JSON-encoded; bytes or str are sent as they are (the controller
        stores the body verbatim as `<node>.json`), and so is a seekable binary file,
        streamed from its current position (again on each retry).
        """
        body: bytes | IO[bytes]
        if isinstance(results, Mapping):
            body = json.dumps(results).encode()
        elif isinstance(results, str):
            body = results.encode()
        elif isinstance(results, bytes | bytearray | memoryview):
            body = bytes(results)
        else:
            body = results
        self._post(self._url(RESULT_URL_ENV), body, "application/json")

    def upload(
        self,
        data: str | os.PathLike[str] | bytes | IO[bytes],
        name: str | None = None,
        *,
        content_type: str | None = None,
    ) -> list[str]:
        """Upload a file (a path or a seekable binary file, streamed) or bytes.

        The file is stored as `<node>-<name>`; `name` defaults to the file's base
        name (for bytes or a file object without a name the server picks one from the
        content type). The content type defaults to a guess from the name. Returns the
        stored names bjc answers; the Go controller answers none (an empty list).
        """
        source: bytes | Path | IO[bytes]
        if isinstance(data, bytes | bytearray | memoryview):
            source = bytes(data)
        elif not isinstance(data, str | os.PathLike):
            source = data
        else:
            source = Path(data)
            if not source.is_file():
                raise FileNotFoundError(f"{source}: no such file")
            name = name or source.name
        url = self._url(FILE_URL_ENV)
        if name:
            url = _with_query(url, "name", name)
        if content_type is None:
            guessed = mimetypes.guess_type(name or "")[0]
            content_type = guessed or "application/octet-stream"
        answer = self._post(url, source, content_type)
        return answer.splitlines()

    def event(
        self,
        reason: str,
        message: str,
        args: Iterable[object] = (),
        *,
        type: Literal["Normal", "Warning"] = "Normal",
        action: str | None = None,
    ) -> None:
        """Create a Kubernetes Event regarding this job pod.

        `message` is formatted by the controller like Go's fmt.Sprintf with `args`
        (`%s`, `%d`, `%q`, ...); args are sent as strings. `reason` must start with
        an upper-case letter (the server checks; a 400 raises `Refused`).
        """
        if type not in ("Normal", "Warning"):
            raise ValueError(f"type must be 'Normal' or 'Warning', not {type!r}")
        body: dict[str, Any] = {"warning": type == "Warning", "reason": reason, "message": message}
        arg_list = [str(a) for a in args]
        if arg_list:
            body["args"] = arg_list
        if action is not None:
            body["action"] = action
        self._post(self._url(EVENT_URL_ENV), json.dumps(body).encode(), "application/json")

    # ------------------------------------------------------------------- HTTP
    def _url(self, env: str) -> str:
        url = self._urls[env]
        if not url:
            raise NotConfigured(f"{env} is not set (the controller sets it in every job pod)")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise NotConfigured(f"{env}: invalid value {_redact(url)!r}: expected an http(s) URL")
        return url

    def _post(self, url: str, body: bytes | Path | IO[bytes], content_type: str) -> str:
        """POST with retries; the answer's body on 2xx."""
        start = 0 if isinstance(body, bytes | Path) else body.tell()
        attempt = 1
        while True:
            try:
                return self._attempt(url, body, content_type, start)
            except _Retry as failure:
                if attempt > self.retries:
                    raise Unreachable(url, attempt, str(failure), failure.status) from None
                delay = self.backoff * 2 ** (attempt - 1)
                delay = random.uniform(delay / 2, delay)
                if failure.after is not None:
                    delay = max(delay, failure.after)
                delay = min(delay, self.max_backoff)
                attempt += 1
                log.warning(
                    "POST %s: %s; retrying in %.2f s (attempt %d of %d)",
                    _redact(url),
                    failure,
                    delay,
                    attempt,
                    self.retries + 1,
                )
                time.sleep(delay)

    def _attempt(
        self, url: str, body: bytes | Path | IO[bytes], content_type: str, start: int
    ) -> str:
        headers = {"Content-Type": content_type}
        if self.token and "token=" not in url:
            headers["Authorization"] = f"Bearer {self.token}"
        stream: IO[bytes] | None = None
        data: IO[bytes] | bytes
        if isinstance(body, Path):
            data = stream = body.open("rb")  # per attempt: a retry sends the whole file
            headers["Content-Length"] = str(os.fstat(stream.fileno()).st_size)
        elif isinstance(body, bytes):
            data = body
        else:  # a file object: from where it stood before the first attempt, to its end
            headers["Content-Length"] = str(body.seek(0, os.SEEK_END) - start)
            body.seek(start)
            data = body
        request = urllib.request.Request(url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            reason = e.read().decode("utf-8", "replace").strip() or e.reason
            e.close()
            if e.code == 429 or e.code >= 500:
                after = _retry_after(e.headers.get("Retry-After"))
                raise _Retry(f"{e.code} {reason}", e.code, after) from None
            raise Refused(url, e.code, str(reason)) from None
        except urllib.error.URLError as e:
            raise _Retry(f"cannot connect: {e.reason}") from None
        except (OSError, http.client.HTTPException) as e:  # reset, timeout, bad answer
            raise _Retry(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__) from None
        finally:
            if stream is not None:
                stream.close()


# --------------------------------------------------------- module-level calls
def report(results: Mapping[str, Any] | bytes | str, **options: Any) -> None:
    """`Client.from_env(**options).report(results)`."""
    Client.from_env(**options).report(results)


def upload(
    data: str | os.PathLike[str] | bytes,
    name: str | None = None,
    *,
    content_type: str | None = None,
    **options: Any,
) -> list[str]:
    """`Client.from_env(**options).upload(data, name, content_type=...)`."""
    return Client.from_env(**options).upload(data, name, content_type=content_type)


def event(
    reason: str,
    message: str,
    args: Iterable[object] = (),
    *,
    type: Literal["Normal", "Warning"] = "Normal",
    action: str | None = None,
    **options: Any,
) -> None:
    """`Client.from_env(**options).event(reason, message, args, type=..., action=...)`."""
    Client.from_env(**options).event(reason, message, args, type=type, action=action)
