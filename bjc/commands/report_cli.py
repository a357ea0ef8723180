"""`bjc report result|file|event`: the job client (bjc.client) for shell job scripts.

A shell job calls `bjc report ...` where it would hand-write curl calls, and tests
the exit code. Input is streamed, never read whole into memory: a file from disk,
stdin through a temporary file (so a retry can send it again), and a result is
refused past `--max-size` before it is read further. What the server answers is
printed through `bjc.terminal.visible`. Like bjc.client, this module imports only
the standard library, bjc.client and bjc.terminal, so the command starts fast in a
job pod and never loads the controller.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import stat
import sys
import tempfile
from typing import IO

from bjc.client import BACKOFF, RETRIES, TIMEOUT, Client, NotConfigured, Refused, Unreachable
from bjc.terminal import visible

EXIT_OK = 0
EXIT_USAGE = 2  # bad arguments, no/invalid callback URL, unreadable file, result too large
EXIT_REFUSED = 3  # the server answered 4xx: the request is wrong, retrying will not help
EXIT_UNREACHABLE = 4  # connection errors, timeouts, 5xx or 429 until the retries ran out

#: the controller's default maxUploadSize: a result larger than that is refused there
MAX_RESULT_SIZE = 64 * 1024 * 1024
_IN_MEMORY = 1024 * 1024  # bytes of stdin kept in memory before spooling to a file
_CHUNK = 64 * 1024

EPILOG = """\
environment: CALLBACK_SERVICE_RESULT_URL, CALLBACK_SERVICE_FILE_URL and
CALLBACK_SERVICE_EVENT_URL, set by the controller in every job pod.

exit codes: 0 delivered; 2 usage (bad arguments, callback URL not set, file not
readable, a result over --max-size: nothing was sent); 3 refused (the server
answered 4xx, reason on stderr); 4 unreachable (connection errors, timeouts, 5xx
or 429 until the retries ran out).
"""


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--retries", type=int, default=RETRIES, help="retries after the first attempt (%(default)s)"
    )
    common.add_argument(
        "--backoff", type=float, default=BACKOFF, metavar="SECONDS",
        help="delay before the first retry, doubled for each further one (%(default)s)",
    )  # fmt: skip
    common.add_argument(
        "--timeout", type=float, default=TIMEOUT, metavar="SECONDS",
        help="per attempt (%(default)s)",
    )  # fmt: skip
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="bjc report",
        description="report to the controller's callback API from a job pod",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    routes = parser.add_subparsers(dest="route", required=True, metavar="result|file|event")

    def route(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        return routes.add_parser(
            name, parents=[common], epilog=EPILOG, formatter_class=formatter,
            help=summary, description=description,
        )  # fmt: skip

    result = route(
        "result",
        "post a result (JSON) from FILE or stdin",
        'post the result: {"<gauge suffix>": [{"value": 1.0, "labels": {...}}]}\n'
        "sent as it is: the controller validates it and stores it verbatim",
    )
    result.add_argument("source", metavar="FILE|-", help="JSON file, or - for stdin")
    result.add_argument(
        "--max-size", type=_size, default=MAX_RESULT_SIZE, metavar="SIZE",
        help="refuse a larger result without reading it further: bytes, or e.g. 512Ki, "
        "1Gi (default 64Mi, the controller's default maxUploadSize)",
    )  # fmt: skip

    upload = route(
        "file",
        "upload a file (stored as <node>-<name>)",
        "upload a file, stored as <node>-<name> in the execution's report directory;\n"
        "prints the stored names the controller answers",
    )
    upload.add_argument("source", metavar="PATH|-", help="file to upload, or - for stdin")
    upload.add_argument("--name", help="name to store it under (default: the file's name)")
    upload.add_argument("--content-type", help="default: guessed from the name")

    event = route(
        "event",
        "create a Kubernetes Event regarding the job pod",
        "create a Kubernetes Event regarding the job pod; MESSAGE is formatted\n"
        "like Go's fmt.Sprintf with the ARGs (%s, %d, %q, ...)",
    )
    event.add_argument(
        "reason", metavar="REASON", help="starts with an upper-case letter, e.g. DiskFull"
    )
    event.add_argument(
        "message", metavar="MESSAGE", help="the note, e.g. 'disk %%s is %%s%%%% full'"
    )
    event.add_argument("args", nargs="*", metavar="ARG", help="values for the message")
    event.add_argument("--type", choices=("Normal", "Warning"), default="Normal")
    event.add_argument("--action", help="what was done (default: n/a)")
    return parser


class _VisibleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return visible(super().format(record))


class TooLarge(ValueError):
    """A result over --max-size: refused before it is read further, nothing sent."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"result larger than {limit} bytes (--max-size): not sent; the controller "
            f"refuses a result over its maxUploadSize (default {MAX_RESULT_SIZE} bytes)"
        )


def _spool(source: IO[bytes], limit: int | None = None) -> IO[bytes]:
    """`source` (stdin, a pipe) copied into a temporary file that a retry can send again.

    It stays in memory up to 1 MiB, then goes to a file in $TMPDIR: the input is
    never held whole in memory. Past `limit` bytes it raises TooLarge at once.
    """
    spool = tempfile.SpooledTemporaryFile(max_size=_IN_MEMORY)
    size = 0
    try:
        while chunk := source.read(_CHUNK):
            size += len(chunk)
            if limit is not None and size > limit:
                raise TooLarge(limit)
            spool.write(chunk)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool


def _result(source: str, limit: int) -> IO[bytes]:
    """The result to send: a regular file as it is (its size checked), else spooled."""
    if source == "-":
        return _spool(sys.stdin.buffer, limit)
    f = open(source, "rb")  # closed by _send, or here when refused
    st = os.fstat(f.fileno())
    if not stat.S_ISREG(st.st_mode):  # a pipe, a device: read as it comes
        with f:
            return _spool(f, limit)
    if st.st_size > limit:
        f.close()
        raise TooLarge(limit)
    return f


def _send(client: Client, args: argparse.Namespace) -> list[str]:
    if args.route == "event":
        client.event(args.reason, args.message, args.args, type=args.type, action=args.action)
        return []
    if args.route == "result":
        with _result(args.source, args.max_size) as result:
            client.report(result)
        return []
    if args.source != "-":
        return client.upload(args.source, args.name, content_type=args.content_type)
    with _spool(sys.stdin.buffer) as data:
        return client.upload(data, args.name, content_type=args.content_type)


def _size(text: str) -> int:
    """Bytes, or a quantity with Ki, Mi or Gi (`64Mi`)."""
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi)?", text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r}: expected bytes or a size like 64Mi")
    return int(match[1]) * {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}[match[2]]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)  # the client's retry warnings
    handler.setFormatter(_VisibleFormatter("bjc report: %(message)s"))
    logging.basicConfig(handlers=[handler])
    try:
        client = Client.from_env(retries=args.retries, backoff=args.backoff, timeout=args.timeout)
        for name in _send(client, args):
            print(visible(name))
    except (ValueError, OSError, NotConfigured) as e:
        print(f"bjc report: {visible(str(e))}", file=sys.stderr)
        return EXIT_USAGE
    except Refused as e:
        print(f"bjc report: refused: {visible(str(e))}", file=sys.stderr)
        return EXIT_REFUSED
    except Unreachable as e:
        print(f"bjc report: {visible(str(e))}", file=sys.stderr)
        return EXIT_UNREACHABLE
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
