"""The harness's own parts that the scenarios' verdicts rest on: /proc reading, the docs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from . import procfs
from .__main__ import SECTION, replace_section


def test_descriptors_tell_api_connections_from_the_rest(tmp_path):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        before = procfs.descriptors(os.getpid(), port)
        assert before is not None
        with socket.create_connection(("127.0.0.1", port)), open(tmp_path / "f", "w"):
            during = procfs.descriptors(os.getpid(), port)
        assert during == procfs.Descriptors(before.api + 1, before.other + 1)
        assert procfs.descriptors(os.getpid(), port) == before


def test_memory_of_a_live_and_of_a_finished_process():
    assert procfs.peak_rss_kb(os.getpid()) >= procfs.rss_kb(os.getpid()) > 0
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    pid = int(done.stdout)
    assert procfs.peak_rss_kb(pid) == 0
    assert procfs.descriptors(pid, 1) is None


def test_the_docs_section_is_replaced_up_to_the_next_heading_or_added():
    doc = f"# R\n\nintro\n\n{SECTION}\n\nold table\n\n## Later\n\nkept\n"
    new = replace_section(doc, f"{SECTION}\n\nnew table\n")
    assert new == f"# R\n\nintro\n\n{SECTION}\n\nnew table\n\n## Later\n\nkept\n"
    assert replace_section("# R\n", f"{SECTION}\n\nt\n") == f"# R\n\n{SECTION}\n\nt\n"
    assert replace_section(f"# R\n\n{SECTION}\n\nold\n", f"{SECTION}\n\nt\n") == (
        f"# R\n\n{SECTION}\n\nt\n"
    )
