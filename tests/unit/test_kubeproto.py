"""bjc.sim.kubeproto against bodies a real kube-apiserver (v1.36.3) sent.

tests/unit/kubeproto/ holds, for a Deployment, a Secret and a 404 Status, the
protobuf body (`*.pb`) and the JSON body (`*.json`) the real server answered for
the same object, and a protobuf watch stream of a ConfigMap (`configmap.json` is
its JSON). Go writes every non-pointer field, so the protobuf side also carries
zeros (`generation: 0`, `paused: false`) that JSON omits: comparisons drop
numeric and boolean zeros on both sides.
"""

from __future__ import annotations

import base64
import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bjc.sim import kubeproto

DATA = Path(__file__).parent / "kubeproto"


def without_zeros(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: without_zeros(v)
            for k, v in value.items()
            if isinstance(v, str | dict | list) or (v is not None and v is not False and v != 0)
        }
    if isinstance(value, list):
        return [without_zeros(v) for v in value]
    return value


def golden(name: str) -> tuple[bytes, dict[str, Any]]:
    return (DATA / f"{name}.pb").read_bytes(), json.loads((DATA / f"{name}.json").read_text())


@pytest.mark.parametrize("name", ["deployment", "secret", "status404"])
def test_decodes_what_the_apiserver_sent_as_its_json(name: str) -> None:
    body, as_json = golden(name)
    assert without_zeros(kubeproto.decode(body)) == without_zeros(as_json)


@pytest.mark.parametrize("name", ["deployment", "secret", "status404"])
def test_encodes_json_to_the_message_the_apiserver_sent(name: str) -> None:
    body, as_json = golden(name)
    ours = kubeproto.encode(as_json)
    assert ours.startswith(b"k8s\x00")
    assert without_zeros(kubeproto.decode(ours)) == without_zeros(kubeproto.decode(body))


def frames(stream: bytes) -> list[bytes]:
    out = []
    while stream:
        (n,) = struct.unpack(">I", stream[:4])
        out.append(stream[4 : 4 + n])
        stream = stream[4 + n :]
    return out


def test_watch_frames_match_the_apiserver_framing() -> None:
    stream = (DATA / "watch-configmap.pb").read_bytes()
    configmap = json.loads((DATA / "configmap.json").read_text())
    event_cls = kubeproto.message_class("v1", "WatchEvent")
    assert event_cls is not None
    [theirs] = [event_cls.FromString(f) for f in frames(stream)]
    [ours] = [event_cls.FromString(f) for f in frames(kubeproto.watch_frame("ADDED", configmap))]
    assert theirs.type == ours.type == "ADDED"
    assert without_zeros(kubeproto.decode(ours.object.raw)) == without_zeros(configmap)
    assert without_zeros(kubeproto.decode(theirs.object.raw)) == without_zeros(configmap)


def test_go_zero_values_for_unset_fields_are_dropped() -> None:
    cls = kubeproto.message_class("v1", "Namespace")
    assert cls is not None
    msg = cls()
    msg.metadata.name = "ns"
    msg.metadata.generateName = ""  # Go writes these for every unset string / Time
    msg.metadata.creationTimestamp.seconds = 0
    msg.metadata.labels["empty"] = ""  # a map value is data, not an unset field
    msg.spec.SetInParent()
    decoded = kubeproto.decode(kubeproto.wrap("v1", "Namespace", msg.SerializeToString()))
    assert decoded == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "ns", "labels": {"empty": ""}},
        "spec": {},
    }


def test_types_whose_json_is_not_their_message() -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "creationTimestamp": "2024-05-01T10:00:00+02:00"},
        "spec": {
            "volumes": [{"name": "v", "emptyDir": {}}],  # inline VolumeSource
            "containers": [
                {
                    "name": "c",
                    "image": "i",
                    "resources": {"limits": {"cpu": 1, "memory": "64Mi"}},
                    "env": [
                        {"name": "E", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
                    ],
                    "readinessProbe": {"httpGet": {"port": 8080}, "periodSeconds": 3},
                    "livenessProbe": {"tcpSocket": {"port": "http"}},
                }
            ],
        },
    }
    back = kubeproto.decode(kubeproto.encode(pod))
    assert back["metadata"]["creationTimestamp"] == "2024-05-01T08:00:00Z"
    container = back["spec"]["containers"][0]
    assert back["spec"]["volumes"] == [{"name": "v", "emptyDir": {}}]
    assert container["resources"] == {"limits": {"cpu": "1", "memory": "64Mi"}}
    assert container["env"][0]["valueFrom"] == {"secretKeyRef": {"name": "s", "key": "k"}}
    assert container["readinessProbe"] == {"httpGet": {"port": 8080}, "periodSeconds": 3}
    assert container["livenessProbe"] == {"tcpSocket": {"port": "http"}}
    event = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": "e"},
        "eventTime": "2024-05-01T10:00:00.123456Z",
    }
    assert kubeproto.decode(kubeproto.encode(event))["eventTime"] == event["eventTime"]
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "data": {"k": base64.b64encode(b"\0\1").decode()},
    }
    assert kubeproto.decode(kubeproto.encode(secret))["data"] == secret["data"]


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (
            {"apiVersion": "v1", "kind": "Secret", "data": {"k": "%%%"}},
            "Secret.data.k: illegal base64",
        ),
        (
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"labels": ["a"]}},
            "ConfigMap.metadata.labels: expected an object, got a list",
        ),
        (
            {"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": "3"}},
            "Deployment.spec.replicas: cannot hold a string '3'",
        ),
        (
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"creationTimestamp": "yesterday"}},
            "Pod.metadata.creationTimestamp: 'yesterday' is not an RFC 3339 time",
        ),
        ({"apiVersion": "meta.k8s.io/v1", "kind": "Table"}, "meta.k8s.io/v1/Table has no protobuf"),
    ],
)
def test_encode_says_what_cannot_be_converted(obj: dict[str, Any], message: str) -> None:
    with pytest.raises(kubeproto.ProtoError, match=message):
        kubeproto.encode(obj)


def test_decode_rejects_bodies_that_are_not_kubernetes_protobuf() -> None:
    with pytest.raises(kubeproto.ProtoError, match="expected prefix"):
        kubeproto.decode(b'{"kind": "Pod"}')
    with pytest.raises(kubeproto.ProtoError, match="malformed protobuf body"):
        kubeproto.decode(b"k8s\x00garbage")
    body = kubeproto.encode({"apiVersion": "v1", "kind": "ConfigMap"})
    with pytest.raises(
        kubeproto.ProtoError, match='no kind "ConfigMap" is registered for version "v9"'
    ):
        kubeproto.decode(body.replace(b"\x02v1", b"\x02v9"))
    # a blank typeMeta takes the kind the URL implies
    assert kubeproto.decode(kubeproto.wrap("", "", b""), "v1", "ConfigMap") == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
    }


def test_bjc_run_does_not_load_protobuf() -> None:
    """Only the simulator speaks protobuf: the controller's idle RSS stays small."""
    code = (
        "import sys, bjc.commands.cli, bjc.runtime, bjc.engine.controller; "
        "print(sorted(m for m in sys.modules if m.startswith(('google', 'bjc.sim'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout == "[]\n"
