"""The callback API fuzzed over HTTP: schemathesis against its OpenAPI document, and a
hypothesis fuzz of node and file names, headers, multipart bodies and JSON payloads.

Both talk to a server process (tests/integration/hostile_server.py: the real app, store
and metrics). After every request: no 5xx, the process alive with its RSS under a bound,
nothing written outside the report directory, no file of another node or of bjc
changed, and every new file owned (bjc.reports.store.file_owner) by the node that sent it.

The default run is short; `nox -s fuzz` runs many more examples
(`BJC_FUZZ_EXAMPLES`) and writes the counts to `BJC_FUZZ_REPORT` (a JSON file).
"""

from __future__ import annotations

import collections
import http.client
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from bjc.reports.resultlog import RESULTS_LOG, scan
from bjc.reports.store import file_owner
from tests.integration.hostile_server import EID, NODES

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("BJC_FUZZ_EXAMPLES", "100"))
RSS_LIMIT = 300 * 1024 * 1024
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
COUNTS: collections.Counter[str] = collections.Counter()


class Server:
    """The server process and what it must never change."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.root = base / "reports"
        self.dir = self.root / EID
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.hostile_server", str(self.root)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("PORT "), line
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.files = self.listing()
        self.files.pop(RESULTS_LOG, None)
        self.logged = 0  # records of the results log seen
        self.max_rss = 0

    def listing(self) -> dict[str, tuple[int, int, int]]:
        """Every file of the execution: (inode, mtime, size); every write changes one."""
        out = {}
        with os.scandir(self.dir) as it:
            for entry in it:
                st_ = entry.stat(follow_symlinks=False)
                out[entry.name] = (st_.st_ino, st_.st_mtime_ns, st_.st_size)
        return out

    def rss(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def request(
        self, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request("POST", path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def check(self, node: str | None) -> None:
        """The invariants, after a request that named `node` in its path."""
        assert self.proc.poll() is None, "the server process died"
        self.max_rss = max(self.max_rss, self.rss())
        assert self.max_rss < RSS_LIMIT, self.max_rss
        outside = [
            str(Path(d, f).relative_to(self.base))
            for d, _, files in os.walk(self.base)
            for f in files
            if not Path(d).is_relative_to(self.root)
        ]
        assert outside == []
        assert sorted(os.listdir(self.root)) == [EID, "latest"]
        sender = node if node in NODES else None
        now = self.listing()
        # the results log (bjc's) takes every node's results: only the sender's are new
        logged, _ = scan((self.dir / RESULTS_LOG).read_bytes())
        assert {r.node for r in logged[self.logged :]} <= {sender}, "another node's result"
        self.logged = len(logged)
        now.pop(RESULTS_LOG, None)
        for name, seen in self.files.items():
            if file_owner(name, NODES) != sender:
                assert now.get(name) == seen, f"{name} of another owner changed"
        for name in set(now) - set(self.files):
            assert sender is not None and file_owner(name, NODES) == sender, name
        self.files = now

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("fuzz"))
    try:
        yield running
    finally:
        running.stop()
        report = os.environ.get("BJC_FUZZ_REPORT")
        if report:
            data = {"examples_per_test": EXAMPLES, "max_rss_bytes": running.max_rss}
            Path(report).write_text(json.dumps({**data, "counts": dict(sorted(COUNTS.items()))}))


# ---------------------------------------------------------------- schemathesis
# Cases come from the document in the repo (strategies are built at import time); the
# first test checks that the live server serves exactly that document.
DOCUMENT = REPO / "bjc" / "web" / "openapi.json"
SCHEMA = schemathesis.openapi.from_path(DOCUMENT)
CASES = st.one_of(
    *(
        SCHEMA.as_strategy(mode, path_parameters={"node": node, "executionID": EID})
        for node in NODES[:3]
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    ),
    SCHEMA.as_strategy(GenerationMode.POSITIVE),  # any node and execution: mostly 406
    SCHEMA.as_strategy(GenerationMode.NEGATIVE),
)


def test_live_server_serves_the_document(server: Server) -> None:
    live = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    assert live.raw_schema == json.loads(DOCUMENT.read_text())
    assert sorted(op.ok().label for op in SCHEMA.get_all_operations()) == [
        "GET /openapi.json",
        "POST /report/{node}/{executionID}/event",
        "POST /report/{node}/{executionID}/file",
        "POST /report/{node}/{executionID}/result",
    ]


@FUZZ
@given(case=CASES)
def test_openapi_document_holds_against_the_live_server(server: Server, case: Any) -> None:
    response = case.call(base_url=server.url)
    COUNTS[f"schemathesis {case.operation.label} {response.status_code}"] += 1
    case.validate_response(
        response,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
    server.check((case.path_parameters or {}).get("node"))


# -------------------------------------------------------------------- hypothesis
UNSAFE = ["", ".", "..", "../x", "a/b", "%2e%2e", "..%2F..%2Fx", "a%252Fb", "a\\b", "\x00"]
FOREIGN = ["x.json", "x-report.txt", "x-y.json", "x-y-report.txt", "container-main.log"]
OWN = ["report.txt", "summary.json", "x", "-", "containers.log", "container-A.log"]
NAMES = st.one_of(st.sampled_from(UNSAFE + FOREIGN + OWN), st.text(max_size=30))
# path segments as sent: known nodes, unknown ones, encoded tricks
NODE_SEGMENTS = st.one_of(
    st.sampled_from(NODES),  # twice: most requests should get past the 406
    st.sampled_from(NODES),
    st.sampled_from(["%2Ebjc-execution", ".hidden", "latest", "n%2Fx", "%FF", "n" * 300]),
    st.text(min_size=1, max_size=20).map(lambda s: quote(s, safe="")),
)
HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
CONTENT_TYPES = st.one_of(
    st.sampled_from(
        [
            "application/json",
            "text/plain",
            "application/octet-stream",
            "multipart/form-data",
            "multipart/form-data; boundary=",
            "multipart/mixed; boundary=zz",
            "image/png",
        ]
    ),
    HEADER_TEXT,
)
FORMAT_PIECES = st.sampled_from(
    [
        "%",
        "%s",
        "%v",
        "%q",
        "%x",
        "%d",
        "%f",
        "%e",
        "%%",
        "%*s",
        "%.*s",
        "%[2]s",
        "%[9]d",
        "%999999999s",
        "%9999999s",
        "%-1000000q",
        "%.1000000f",
        "%09999999d",
        "%#v",
        "%!",
        "[",
        "]",
        ".",
        "*",
        "-",
        "0",
        "9",
        "é",
        "\n",
    ]
)
FORMATS = st.lists(st.one_of(FORMAT_PIECES, st.text(max_size=4)), min_size=1, max_size=12).map(
    "".join
)
LABELS = st.dictionaries(
    st.sampled_from(["kind", "where", "node", "executionID", "x"]),
    st.one_of(st.text(max_size=20), st.integers(), st.none()),
    max_size=4,
)
ENTRY = st.fixed_dictionaries(
    {
        "value": st.one_of(
            st.floats(allow_nan=False, allow_infinity=False),
            st.integers(-(2**70), 2**70),
            st.integers(0, 9),
            st.text(max_size=3),
        )
    },
    optional={"labels": LABELS, "extra": st.integers()},
)
RESULTS = st.dictionaries(
    st.sampled_from(["checks", "checks", "other", "bad-name", ""]) | st.text(max_size=10),
    st.lists(ENTRY, max_size=5),
    max_size=3,
)
EVENTS = st.fixed_dictionaries(
    {
        "reason": st.sampled_from(["Reason"] * 8 + ["lower", "Ä" * 70]) | st.just("Reason"),
        "message": FORMATS,  # "" is invalid too
    },
    optional={
        "warning": st.one_of(st.booleans(), st.booleans(), st.text(max_size=3)),
        "action": st.one_of(st.none(), st.text(max_size=10)),
        "args": st.one_of(st.none(), st.lists(st.text(max_size=8), max_size=6)),
    },
)


def nested(depth: int) -> bytes:
    return b'{"checks": [{"value": 1, "labels": {}, "x": ' + b"[" * depth + b"]" * depth + b"}]}"


RESULT_BODIES = RESULTS.map(lambda v: json.dumps(v).encode())
EVENT_BODIES = EVENTS.map(lambda v: json.dumps(v, ensure_ascii=False).encode())
JSON_BODIES = st.one_of(
    RESULT_BODIES,
    EVENT_BODIES,
    st.sampled_from([10, 900, 1100, 20_000]).map(nested),
    st.binary(max_size=200),
    st.sampled_from([b'{"checks": [{"value": 1, "labels": {"kind": "\xff"}}]}', b"\xef\xbb\xbf{}"]),
)


@st.composite
def multipart(draw: st.DrawFn) -> tuple[bytes, str]:
    boundary = draw(st.sampled_from(["zz", "b" * 70, uuid.uuid4().hex]))
    parts = []
    for _ in range(draw(st.integers(0, 3))):
        name = draw(NAMES).replace('"', "").replace("\r", "").replace("\n", "")
        disposition = draw(
            st.sampled_from(
                [
                    f'form-data; name="f"; filename="{name}"',
                    f"form-data; name=\"f\"; filename*=UTF-8''{quote(name)}",
                    'form-data; name="field"',
                    f"form-data; filename*=bogus''{quote(name)}",
                    ";;;",
                ]
            )
        )
        content = draw(st.binary(max_size=300))
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n"
        parts.append(head.encode("utf-8", "surrogatepass") + content + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    cut = draw(st.one_of(st.none(), st.integers(0, len(body))))
    return (body if cut is None else body[:cut]), f"multipart/form-data; boundary={boundary}"


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, str, bytes, dict[str, str]]:
    segment = draw(NODE_SEGMENTS)
    route = draw(st.sampled_from(["result", "file", "event"]))
    eid = draw(st.sampled_from([EID] * 8 + ["202401011300", "%2E%2E"]))
    headers: dict[str, str] = {}
    query = ""
    if route == "file" and draw(st.booleans()):
        body, headers["Content-Type"] = draw(multipart())
    else:
        if route == "file":
            body = draw(st.binary(max_size=500))
        else:  # mostly the route's own shape
            own = RESULT_BODIES if route == "result" else EVENT_BODIES
            body = draw(st.one_of(own, own, own, JSON_BODIES))
        if draw(st.booleans()):
            headers["Content-Type"] = draw(CONTENT_TYPES)
    if route == "file":
        how = draw(st.sampled_from(["query", "disposition", "none"]))
        name = draw(NAMES)
        if how == "query":
            query = "?name=" + draw(st.sampled_from([quote(name, safe=""), name.replace(" ", "")]))
        elif how == "disposition":
            headers["Content-Disposition"] = draw(
                st.one_of(
                    st.just(f'attachment; filename="{quote(name, safe="")}"'),
                    st.just(f"attachment; filename*=UTF-8''{quote(name, safe='')}"),
                    HEADER_TEXT,
                )
            )
    if draw(st.booleans()):
        headers["Authorization"] = draw(HEADER_TEXT)
    if draw(st.integers(0, 9)) == 0:  # aiohttp inflates these itself, or fails to
        headers["Content-Encoding"] = draw(st.sampled_from(["gzip", "deflate", "br", "zstd", "x"]))
    path = f"/report/{segment}/{eid}/{route}{query}"
    path = "".join(c if 0x20 < ord(c) < 0x7F else quote(c) for c in path)
    return segment, route, path, body, headers


@FUZZ
@given(request=requests())
def test_hostile_requests_never_hurt_the_server(
    server: Server, request: tuple[str, str, str, bytes, dict[str, str]]
) -> None:
    segment, route, path, body, headers = request
    status, answer = server.request(path, body, headers)
    COUNTS[f"fuzz {route} {status}"] += 1
    assert status < 500, (status, answer[:300])
    if 400 <= status < 500 and status not in (404, 405):  # bjc's answers say why
        assert answer.strip(), status
    server.check(unquote(segment))
