"""What /proc tells about a `bjc run` process from outside: memory and open descriptors.

A controller exposes no debug endpoint, so leaks are judged the way an operator
would: by its file descriptors and its memory. Descriptors are split into sockets
to the API server (a connection pool that grows and shrinks with load, bounded by
the client's pool limit, so never a leak by itself) and everything else (listening
sockets, callback connections, files, pipes), which must come back to where it was.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Descriptors:
    api: int  # TCP connections to the API server
    other: int  # everything else


def _status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def peak_rss_kb(pid: int) -> int:
    """VmHWM: the most resident memory the process ever had (0 when it is gone)."""
    return _status_kb(pid, "VmHWM")


def rss_kb(pid: int) -> int:
    return _status_kb(pid, "VmRSS")


def _socket_peers(pid: int) -> dict[str, int]:
    """Socket inode → remote port, for the TCP sockets of the process's network namespace."""
    peers: dict[str, int] = {}
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                next(f)
                for line in f:
                    fields = line.split()
                    peers[fields[9]] = int(fields[2].rsplit(":", 1)[1], 16)
        except (OSError, StopIteration, IndexError, ValueError):
            continue
    return peers


def descriptors(pid: int, api_port: int) -> Descriptors | None:
    """The process's open descriptors, None when it is gone."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    peers = _socket_peers(pid)
    api = other = 0
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:[") and peers.get(target[8:-1]) == api_port:
            api += 1
        else:
            other += 1
    return Descriptors(api, other)
