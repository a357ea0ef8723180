"""Text that jobs control, made harmless to show in a terminal or a log line.

Job pods write their logs, upload file names, event reasons and notes, results and
error answers; bjc shows parts of them to operators: `bjc status` prints the last log
line of a failed node, `bjc mock` prints every request, the controller logs names and
reasons. A terminal acts on control characters in what it prints: ESC starts
sequences that retitle the window (`ESC]0;...BEL`), clear the screen (`ESC[2J`),
switch to the alternate screen (`ESC[?1049h`) or set the clipboard; CR and BS
overwrite what was printed before; a newline forges a log line of its own; and the
Unicode bidirectional overrides make a line read differently from what it is.

`visible` replaces each such character with a visible escape: `\\n`, `\\r`, `\\t`,
`\\xHH` below U+0100, else `\\uHHHH`. Characters that are not in `UNSAFE` are kept,
backslashes too: the output is for reading, not for decoding back, and
`visible(visible(s)) == visible(s)`. `json_safe` writes the same characters as JSON
escapes, so a JSON log line stays exactly what was logged once decoded.

Standard library only, at the bottom of the module graph: `bjc report` in a job pod
imports it, and so can every command and the log format.
"""

from __future__ import annotations

import re

__all__ = ["UNSAFE", "json_safe", "visible"]

#: C0 controls (newline and tab included), DEL, C1 controls, the Unicode line and
#: paragraph separators, and the bidirectional formatting characters (ALM, LRM, RLM,
#: the embeddings and overrides LRE..RLO, and the isolates LRI..PDI).
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def visible(text: str) -> str:
    """`text` with every character of `UNSAFE` shown as an escape (`ESC` as `\\x1b`)."""
    return UNSAFE.sub(_escape, text)


def json_safe(encoded: str) -> str:
    """Compact JSON (no whitespace between tokens) with `UNSAFE` characters as `\\uHHHH`.

    Decoding gives the same value; printing it puts no control character on a terminal.
    """
    return UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", encoded)
