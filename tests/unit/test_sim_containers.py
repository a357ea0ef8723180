"""Which pods ProcessPods runs as processes, and how it counts probe results."""

from __future__ import annotations

import msgspec
import pytest

from bjc.sim.containers import ProcessPods, _Probe, _Probing
from bjc.sim.podmodel import Pod


def pod(*containers: dict) -> Pod:
    return msgspec.convert({"spec": {"containers": list(containers)}}, Pod)


@pytest.mark.parametrize(
    ("container", "claimed"),
    [
        ({"name": "bjc", "image": "ghcr.io/bjc-project/bjc:0.1.0", "args": ["run"]}, True),
        ({"name": "bjc", "image": "ghcr.io/bjc-project/bjc", "args": ["run", "-v"]}, True),
        ({"name": "bjc", "image": "ghcr.io/bjc-project/bjc@sha256:ab", "args": ["run"]}, True),
        ({"name": "bjc", "image": "ghcr.io/bjc-project/bjc:0.1.0", "args": ["demo"]}, False),
        # no args: the image's CMD, `run` (the Go controller's Helm chart sets none)
        ({"name": "bjc", "image": "ghcr.io/bjc-project/bjc:0.1.0"}, True),
        (
            {
                "name": "bjc",
                "image": "ghcr.io/bjc-project/bjc:1",
                "args": ["run"],
                "command": ["sh"],
            },
            False,
        ),
        ({"name": "job", "image": "busybox:1.36", "args": ["run"]}, False),
        ({"name": "bjc", "image": "registry:5000/bjc-project/bjc:1", "args": ["run"]}, False),
    ],
)
def test_claims_the_bjc_image_run_with_args_run(container: dict, claimed: bool, tmp_path) -> None:
    assert ProcessPods(tmp_path).claims(pod(container)) is claimed


def test_claims_a_mirror_when_told_its_image(tmp_path) -> None:
    mirror = ProcessPods(tmp_path, image="registry:5000/bjc-project/bjc")
    assert mirror.claims(
        pod({"name": "c", "image": "registry:5000/bjc-project/bjc:1", "args": ["run"]})
    )


def test_a_pod_with_a_sidecar_is_not_claimed(tmp_path) -> None:
    bjc = {"name": "bjc", "image": "ghcr.io/bjc-project/bjc:0.1.0", "args": ["run"]}
    assert not ProcessPods(tmp_path).claims(pod(bjc, {"name": "proxy", "image": "envoy"}))


def test_probe_outcome_flips_only_after_its_thresholds() -> None:
    probing = _Probing(_Probe(successThreshold=2, failureThreshold=3), ok=False)
    assert [probing.record(s) for s in (True, False, True, True)] == [False, False, False, True]
    assert probing.ok
    assert [probing.record(s) for s in (False, False, True, False, False)] == [False] * 5
    assert probing.record(False) and not probing.ok  # the third failure in a row
