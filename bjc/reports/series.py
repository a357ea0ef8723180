"""The series store: Prometheus series held compactly and rendered as text by bjc itself.

Why this exists: with thousands of nodes and 30 executions of history the
per-execution gauges are bjc's largest data structure (100,000-300,000 series). A
plain aioprometheus `Gauge` keys every series by an orjson-encoded label dict and
formats every line on every scrape, which costs about 1 KB per series and most of a
second per scrape at that size. So the per-execution gauges (processing, duration,
the configured result gauges, execution progress) live in `SeriesFamily`, a series
store built for this shape of data:

- one block per (metric, execution): a dict from the tuple of label values (interned:
  they repeat across nodes and executions) to a float; `executionID` is written once
  per block, not stored per series;
- a block caches its rendered text until it changes, so a scrape formats only the
  blocks that changed since the previous one;
- after a scrape, blocks of past executions (not the current one, not "latest") are
  frozen: only their zlib-compressed text is kept (about 10 bytes per series); a late
  write thaws the block by parsing that text back;
- removing an execution drops its blocks: time proportional to that execution's
  series, not to all series.

`SeriesFamily` is an `aioprometheus.Gauge`, so it is registered in an
`aioprometheus.Registry` next to plain aioprometheus collectors; `render_simple`
renders those, and `ComputedGauge` / `ComputedCounter` are collectors whose one value
is computed at scrape time. Rendering escapes label values and help texts as the text
format 0.0.4 requires (aioprometheus' own text formatter does not). A rendered
exposition is a list of chunks, plain or compressed (`Packed`); `assemble` joins them.

What it deliberately does not do: it knows no metric of bjc's (bjc.reports.metrics
declares them) and serves nothing (bjc.web.metrics does). Everything runs on the event
loop; nothing here is thread-safe, except `assemble` and `Packed.inflate`.
"""

from __future__ import annotations

import itertools
import math
import re
import zlib
from collections.abc import Callable, Container, Iterable, Sequence
from typing import Any

from aioprometheus import Counter, Gauge, Registry

from bjc.config.settings import EXECUTION_ID_LABEL

__all__ = [
    "Block",
    "Chunk",
    "ComputedCounter",
    "ComputedGauge",
    "Packed",
    "SeriesFamily",
    "SeriesKey",
    "assemble",
    "chunks_size",
    "escape_help",
    "escape_label_value",
    "format_value",
    "render_simple",
]

_UNESCAPE_RE = re.compile(r"\\(.)")
_SPECIAL_VALUES = {"inf": "+Inf", "-inf": "-Inf", "nan": "NaN"}


def escape_label_value(value: str) -> str:
    """Escape a label value for the text format: backslash, double quote, line feed."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    text = repr(value)
    return _SPECIAL_VALUES.get(text, text)


def _unescape(value: str) -> str:
    if "\\" not in value:
        return value
    return _UNESCAPE_RE.sub(lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


class Packed:
    """One zlib-compressed piece of a frozen block, and its size inflated."""

    __slots__ = ("data", "size")

    def __init__(self, text: bytes) -> None:
        self.data = zlib.compress(text, 1)
        self.size = len(text)

    def inflate(self) -> bytes:
        return zlib.decompress(self.data)


Chunk = bytes | Packed


def assemble(chunks: Sequence[Chunk]) -> bytearray:
    """Join rendered chunks into one buffer, inflating frozen pieces one at a time.

    The buffer is allocated once at its final size, and no more than one inflated
    piece is alive besides it: a scrape leaves no fragmented heap behind. Safe to run
    in a thread (the chunks are immutable; zlib releases the GIL).
    """
    body = bytearray(chunks_size(chunks))
    view = memoryview(body)
    pos = 0
    for chunk in chunks:
        data = chunk.inflate() if isinstance(chunk, Packed) else chunk
        view[pos : pos + len(data)] = data
        pos += len(data)
    return body


def chunks_size(chunks: Sequence[Chunk]) -> int:
    return sum(c.size if isinstance(c, Packed) else len(c) for c in chunks)


_FREEZE_MIN_BYTES = 1024
_PIECE_LINES = 512

SeriesKey = tuple[str, ...]


class Block:
    """The series of one metric for one execution.

    Hot: `series` maps the label values (in the family's key order) to the value, and
    `text` caches the rendered lines until the next change. Frozen (a past execution,
    after a scrape): only `packed`, the compressed text, is kept; a write thaws it.
    """

    __slots__ = ("count", "packed", "series", "text")

    def __init__(self) -> None:
        self.series: dict[SeriesKey, float] | None = {}
        self.text: list[bytes] | None = None  # rendered pieces
        self.packed: list[Packed] | None = None
        self.count = 0  # series of a frozen block


class SeriesFamily(Gauge):
    """A gauge family whose series belong to executions (one `executionID` label).

    Series are stored per execution in a `Block`, keyed by the tuple of their label
    values in `key_fields` order (`executionID` is not part of the key when it is the
    last label; it is written once per block). Values are floats. It is an
    `aioprometheus.Gauge`, so it lives in an aioprometheus `Registry`; `get_all` (used
    only by aioprometheus' own formatters) is slow by design and not used by
    `Metrics.render`.
    """

    def __init__(self, name: str, doc: str, label_names: Sequence[str], registry: Registry) -> None:
        super().__init__(name, doc, registry=registry)
        names = tuple(label_names)
        if EXECUTION_ID_LABEL not in names:
            raise ValueError(f"metric {name}: label {EXECUTION_ID_LABEL} is required")
        self.label_names = names
        self.execution_last = names[-1] == EXECUTION_ID_LABEL
        self.key_fields = names[:-1] if self.execution_last else names
        self.blocks: dict[str, Block] = {}
        self._head = f"# HELP {name} {escape_help(doc)}\n# TYPE {name} gauge\n".encode()
        value_re = r'"((?:[^"\\]|\\.)*)"'
        pairs = [f"{n}={value_re}" for n in self.key_fields]
        if self.execution_last:
            pairs.append(f'{EXECUTION_ID_LABEL}="(?:[^"\\\\]|\\\\.)*"')
        self._line_re = re.compile(re.escape(name) + r"\{" + ",".join(pairs) + r"\} (\S+)\n")

    # --- writing ---

    def put(self, execution_id: str, key: SeriesKey, value: float) -> None:
        """Set one series; `key` holds the label values in `key_fields` order."""
        block = self.blocks.get(execution_id)
        if block is None or block.series is None:
            block = self.writable(execution_id)
        block.series[key] = value  # type: ignore[index]
        block.text = None

    def writable(self, execution_id: str) -> Block:
        """The execution's block, created or thawed so that `series` is a dict."""
        block = self.blocks.get(execution_id)
        if block is None:
            block = self.blocks[execution_id] = Block()
        elif block.series is None:
            self._thaw(block)
        return block

    def remove(self, execution_id: str) -> int:
        """Drop every series of the execution; returns how many there were."""
        block = self.blocks.pop(execution_id, None)
        if block is None:
            return 0
        return block.count if block.series is None else len(block.series)

    # --- reading ---

    def execution_ids(self) -> list[str]:
        return list(self.blocks)

    def is_frozen(self, execution_id: str) -> bool:
        block = self.blocks.get(execution_id)
        return block is not None and block.series is None

    def __len__(self) -> int:
        return sum(b.count if b.series is None else len(b.series) for b in self.blocks.values())

    def render_into(self, out: list[Chunk], hot: Container[str]) -> None:
        """Append this family's chunks to `out`; freeze the blocks not in `hot`."""
        first = True
        for execution_id, block in self.blocks.items():
            chunks: Sequence[Chunk]
            if block.packed is not None:
                chunks = block.packed
            elif block.series:
                pieces = block.text
                if pieces is None:
                    pieces = self._render_pieces(execution_id, block.series)
                if execution_id in hot or sum(map(len, pieces)) < _FREEZE_MIN_BYTES:
                    chunks = block.text = pieces
                else:  # freeze: keep the compressed text only
                    chunks = block.packed = [Packed(p) for p in pieces]
                    block.count = len(block.series)
                    block.series = None
                    block.text = None
                    # (the compressed pieces go out, not the plain ones: keeping every
                    # plain piece of every block alive until the body is joined would
                    # fragment the heap)
            else:
                continue
            if first:
                out.append(self._head)
                first = False
            out.extend(chunks)

    def _render_pieces(self, execution_id: str, series: dict[SeriesKey, float]) -> list[bytes]:
        """The block's lines, in pieces of at most `_PIECE_LINES` lines.

        Pieces keep every transient buffer small (below the allocator's mmap
        threshold), so a scrape of 100,000 series does not leave a fragmented heap.
        """
        start = self.name + "{"
        if self.execution_last:
            sep = "," if self.key_fields else ""
            end = f'{sep}{EXECUTION_ID_LABEL}="{escape_label_value(execution_id)}"}} '
        else:
            end = "} "
        pairs = ",".join(f'{n}="%s"' for n in self.key_fields)
        template = start + pairs + end.replace("%", "%%")
        quotes = 2 * (len(self.key_fields) + self.execution_last)
        finite = all(map(math.isfinite, series.values()))
        items = iter(series.items())
        pieces = []
        while chunk := list(itertools.islice(items, _PIECE_LINES)):
            # Fast path: raw values, then verify with C-speed scans that nothing needed
            # escaping (and all values are finite); otherwise format carefully.
            if finite:
                text = "".join([template % k + repr(v) + "\n" for k, v in chunk])
                if (
                    "\\" not in text
                    and text.count("\n") == len(chunk)
                    and text.count('"') == quotes * len(chunk)
                ):
                    pieces.append(text.encode())
                    continue
            fmt = format_value
            esc = escape_label_value
            text = "".join([template % tuple(map(esc, k)) + fmt(v) + "\n" for k, v in chunk])
            pieces.append(text.encode())
        return pieces

    def _series_of(self, block: Block) -> Iterable[tuple[SeriesKey, float]]:
        if block.series is not None:
            return block.series.items()
        assert block.packed is not None
        return [
            (tuple(map(_unescape, g[:-1])), float(g[-1]))
            for piece in block.packed
            for g in (m.groups() for m in self._line_re.finditer(piece.inflate().decode()))
        ]

    def _thaw(self, block: Block) -> dict[SeriesKey, float]:
        series = dict(self._series_of(block))
        block.series = series
        block.packed = None
        block.count = 0
        return series

    # --- aioprometheus Collector interface (slow path, not used by Metrics.render) ---

    def set(self, labels: Any, value: Any) -> None:
        raise TypeError(f"{self.name}: series are set through bjc.reports.metrics.Metrics")

    set_value = set

    def get_all(self) -> list[tuple[dict[str, str], float]]:  # type: ignore[override]
        result = []
        fields = self.key_fields
        for execution_id, block in self.blocks.items():
            for key, value in self._series_of(block):
                labels = dict(zip(fields, key, strict=True))
                if self.execution_last:
                    labels[EXECUTION_ID_LABEL] = execution_id
                result.append((labels, value))
        return result


class _Computed:
    """A label-less series whose value is computed at scrape time (None: no series)."""

    def __init__(
        self, name: str, doc: str, compute: Callable[[], float | None], registry: Registry
    ) -> None:
        super().__init__(name, doc, registry=registry)  # type: ignore[call-arg]
        self._compute = compute

    def get_all(self) -> list[tuple[dict[str, str], float]]:
        value = self._compute()
        return [] if value is None else [({}, value)]


class ComputedGauge(_Computed, Gauge):  # type: ignore[misc]
    pass


class ComputedCounter(_Computed, Counter):  # type: ignore[misc]
    pass


def render_simple(collector: Gauge | Counter, out: list[Chunk]) -> None:
    items = collector.get_all()
    if not items:
        return
    name = collector.name
    kind = collector.kind.name
    lines = [f"# HELP {name} {escape_help(collector.doc)}", f"# TYPE {name} {kind}"]
    for labels, value in items:
        if labels:
            pairs = ",".join(f'{k}="{escape_label_value(str(v))}"' for k, v in labels.items())
            lines.append(f"{name}{{{pairs}}} {format_value(float(value))}")  # type: ignore[arg-type]
        else:
            lines.append(f"{name} {format_value(float(value))}")  # type: ignore[arg-type]
    lines.append("")
    out.append("\n".join(lines).encode())
