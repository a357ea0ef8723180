"""What the controller reads from a pod: why a failed pod failed."""

from __future__ import annotations

import msgspec

from bjc.kube.objects import Pod


def pod(status: dict) -> Pod:
    return msgspec.json.decode(msgspec.json.encode({"status": status}), type=Pod)


def terminated(name: str, code: int, reason: str, message: str = "") -> dict:
    ended = {"exitCode": code, "reason": reason, "message": message}
    return {"name": name, "state": {"terminated": ended}}


def test_a_container_killed_for_memory_is_named_with_its_exit_code() -> None:
    oom = pod(
        {
            "phase": "Failed",
            "containerStatuses": [
                terminated("sidecar", 0, "Completed"),
                terminated("job", 137, "OOMKilled"),
            ],
        }
    )
    assert oom.failure == "container job exited 137 (OOMKilled)"


def test_the_pods_own_reason_comes_first() -> None:
    evicted = pod(
        {
            "phase": "Failed",
            "reason": "Evicted",
            "message": "The node was low on resource: memory.",
            "containerStatuses": [terminated("job", 1, "Error", "disk full")],
        }
    )
    assert evicted.failure == (
        "Evicted: The node was low on resource: memory.; container job exited 1 (Error: disk full)"
    )


def test_a_pod_with_nothing_to_say_says_nothing() -> None:
    assert pod({"phase": "Failed"}).failure == ""
