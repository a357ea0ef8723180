"""Job-controlled text is shown with its control characters as visible escapes (bjc.terminal)."""

from __future__ import annotations

import json

import pytest

from bjc.terminal import UNSAFE, json_safe, visible

#: What a hostile job's last log line did to an operator's terminal: retitle it,
#: clear it, switch to the alternate screen; plus CR overwriting, a forged line, a C1
#: CSI (U+009B) and a right-to-left override making the line read backwards.
HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x1b[?1049hok\rFAKE\nline\x9b31m\x7f\u202eevil\u2066"


def test_visible_shows_every_control_character_as_an_escape() -> None:
    shown = visible(HOSTILE)
    assert shown == (
        "\\x1b]0;pwned\\x07\\x1b[2J\\x1b[?1049hok\\rFAKE\\nline\\x9b31m\\x7f\\u202eevil\\u2066"
    )
    assert UNSAFE.search(shown) is None
    assert all(char.isprintable() for char in shown)


C0_DEL_C1 = [*range(0x20), *range(0x7F, 0xA0)]
SEPARATORS_AND_BIDI = [0x61C, 0x200E, 0x200F, 0x2028, 0x2029, *range(0x202A, 0x202F)]
ISOLATES = list(range(0x2066, 0x206A))


@pytest.mark.parametrize("code", C0_DEL_C1 + SEPARATORS_AND_BIDI + ISOLATES)
def test_each_unsafe_character_is_escaped(code: int) -> None:
    shown = visible(f"a{chr(code)}b")
    assert shown.startswith("a\\") and shown.endswith("b") and chr(code) not in shown


def test_visible_keeps_printable_text_and_is_idempotent() -> None:
    text = "node-1: /var is 93% full ✓ Grüße 日本語 C:\\path \U0001f600"
    assert visible(text) == text
    assert visible(visible(HOSTILE)) == visible(HOSTILE)


def test_json_safe_decodes_to_the_same_value_without_control_characters() -> None:
    encoded = json.dumps({"msg": HOSTILE}, ensure_ascii=False, separators=(",", ":"))
    safe = json_safe(encoded)
    assert UNSAFE.search(safe) is None
    assert json.loads(safe) == {"msg": HOSTILE}
