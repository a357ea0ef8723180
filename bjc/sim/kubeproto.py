"""Kubernetes' protobuf wire format for bjc.sim: stored JSON dicts <-> protobuf bytes.

Exists because client-go programs (kubectl, controller-runtime controllers) send and
ask for built-in kinds as `application/vnd.kubernetes.protobuf`, while the sim stores
JSON dicts. One converter, driven by the message descriptors of k8s.io/api's
`.proto` files (compiled into kubeproto.binpb by tools/gen_kubeproto.py), maps a dict
onto the message of its apiVersion/kind and back. Proto field names are the JSON
names; the exceptions are the types whose JSON is not their message: Time and
MicroTime (RFC 3339 strings), IntOrString, Quantity (a string), RawExtension and
FieldsV1 (embedded JSON), Verbs (a list), and the Go structs that JSON inlines into
their parent (INLINE). No kind served by the sim uses metav1.Duration, so it is left out.

The wire format, as in k8s.io/apimachinery's protobuf serializer: a body is the
magic `k8s\\x00` followed by a runtime.Unknown {typeMeta {apiVersion, kind}, raw},
`raw` being the typed message; a watch stream is a sequence of frames, each a 4-byte
big-endian length and a metav1.WatchEvent {type, object.raw = a body as above}.

Go writes every non-pointer field, so a decoded message has fields JSON would omit.
Decoding keeps what is on the wire except empty strings and the zero Time, which is
what Go's JSON shows for them (omitted or null), so that defaulting sees them unset.
Only the simulator imports this module: `bjc run` never loads protobuf.
"""

from __future__ import annotations

import base64
import struct
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import resources
from typing import Any

import msgspec
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

MEDIA_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"

_META_PKG = "k8s.io.apimachinery.pkg.apis.meta"
_META = f"{_META_PKG}.v1"
_TIME = f"{_META}.Time"
_MICRO_TIME = f"{_META}.MicroTime"
_VERBS = f"{_META}.Verbs"
_FIELDS_V1 = f"{_META}.FieldsV1"
_INT_OR_STRING = "k8s.io.apimachinery.pkg.util.intstr.IntOrString"
_QUANTITY = "k8s.io.apimachinery.pkg.api.resource.Quantity"
_RAW_EXTENSION = "k8s.io.apimachinery.pkg.runtime.RawExtension"
_UNKNOWN = "k8s.io.apimachinery.pkg.runtime.Unknown"

# (message, field) of Go structs embedded with `json:",inline"`: their fields appear in
# the parent's JSON object (tools/gen_kubeproto.py checks this against the Go sources)
INLINE = frozenset(
    {
        ("k8s.io.api.core.v1.Volume", "volumeSource"),
        ("k8s.io.api.core.v1.PersistentVolumeSpec", "persistentVolumeSource"),
        ("k8s.io.api.core.v1.SecretProjection", "localObjectReference"),
        ("k8s.io.api.core.v1.ConfigMapVolumeSource", "localObjectReference"),
        ("k8s.io.api.core.v1.ConfigMapProjection", "localObjectReference"),
        ("k8s.io.api.core.v1.ConfigMapKeySelector", "localObjectReference"),
        ("k8s.io.api.core.v1.SecretKeySelector", "localObjectReference"),
        ("k8s.io.api.core.v1.ConfigMapEnvSource", "localObjectReference"),
        ("k8s.io.api.core.v1.SecretEnvSource", "localObjectReference"),
        ("k8s.io.api.core.v1.Probe", "handler"),
    }
)

_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.Decoder().decode
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class ProtoError(ValueError):
    """A body or object that cannot be converted; the message says where."""


@cache
def _classes() -> dict[str, type[Message]]:
    data = resources.files(__package__).joinpath("kubeproto.binpb").read_bytes()
    files = descriptor_pb2.FileDescriptorSet.FromString(data).file
    return message_factory.GetMessages(files, pool=descriptor_pool.DescriptorPool())


def message_class(api_version: str, kind: str) -> type[Message] | None:
    """The message of ``kind`` in ``api_version`` (None: the kind has none, e.g. Table)."""
    group, _, version = api_version.rpartition("/")
    version = version or "v1"  # discovery documents have no apiVersion
    classes = _classes()
    # meta kinds (Status, DeleteOptions, ...) belong to every group, as in client-go's scheme
    return classes.get(
        f"k8s.io.api.{group.split('.')[0] or 'core'}.{version}.{kind}"
    ) or classes.get(f"{_META_PKG}.{version}.{kind}")


def encode(obj: dict[str, Any]) -> bytes:
    """A protobuf body for ``obj`` (with apiVersion and kind); ProtoError if impossible."""
    api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
    cls = message_class(api_version, kind)
    if cls is None:
        raise ProtoError(f"{api_version}/{kind} has no protobuf message")
    msg = cls()
    _fill(msg, {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}, kind)
    return wrap(api_version, kind, msg.SerializeToString(deterministic=True))


def wrap(api_version: str, kind: str, raw: bytes) -> bytes:
    """The body carrying the serialized message ``raw`` of ``kind``."""
    unknown = _classes()[_UNKNOWN]()
    unknown.typeMeta.apiVersion = api_version
    unknown.typeMeta.kind = kind
    unknown.raw = raw
    return MAGIC + unknown.SerializeToString(deterministic=True)


def decode(body: bytes, api_version: str = "", kind: str = "") -> dict[str, Any]:
    """The JSON dict of a protobuf body; ``api_version``/``kind`` fill in a blank typeMeta."""
    if not body.startswith(MAGIC) or len(body) == len(MAGIC):
        raise ProtoError(
            "provided data does not appear to be a protobuf message, expected prefix [107 56 115 0]"
        )
    try:
        unknown = _classes()[_UNKNOWN].FromString(body[4:])
        api_version = unknown.typeMeta.apiVersion or api_version
        kind = unknown.typeMeta.kind or kind
        cls = message_class(api_version, kind)
        if cls is None:
            raise ProtoError(f'no kind "{kind}" is registered for version "{api_version}"')
        msg = cls.FromString(unknown.raw)
    except DecodeError as exc:
        raise ProtoError(f"malformed protobuf body: {exc}") from None
    type_meta = {"apiVersion": api_version, "kind": kind}
    return {**{k: v for k, v in type_meta.items() if v}, **_read(msg)}


def watch_frame(type_: str, obj: dict[str, Any]) -> bytes:
    """One length-delimited frame of a protobuf watch stream."""
    event = _classes()[f"{_META}.WatchEvent"]()
    event.type = type_
    event.object.raw = encode(obj)
    data = event.SerializeToString(deterministic=True)
    return struct.pack(">I", len(data)) + data


# --- message -> JSON ---


def _read(msg: Message) -> dict[str, Any]:
    desc = msg.DESCRIPTOR
    out: dict[str, Any] = {}
    for fd, value in msg.ListFields():
        if _is_map(fd):
            vfd = fd.message_type.fields_by_name["value"]
            out[fd.name] = {k: _read_value(vfd, v) for k, v in value.items()}
        elif fd.is_repeated:
            out[fd.name] = [_read_value(fd, v) for v in value]
        elif not _unset(fd, value):
            v = _read_value(fd, value)
            if (desc.full_name, fd.name) in INLINE:
                out.update(v)
            else:
                out[fd.name] = v
    return out


def _read_value(fd: FieldDescriptor, value: Any) -> Any:
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        name = fd.message_type.full_name
        if name == _TIME:
            return _rfc3339(value)
        if name == _MICRO_TIME:
            return _rfc3339(value, micro=True)
        if name == _INT_OR_STRING:
            return value.strVal if value.type == 1 else value.intVal
        if name == _QUANTITY:
            return value.string
        if name == _VERBS:
            return list(value.items)
        if name in (_RAW_EXTENSION, _FIELDS_V1):
            raw = value.raw if name == _RAW_EXTENSION else value.Raw
            try:
                return _json_decode(raw) if raw else None
            except msgspec.DecodeError as exc:
                raise ProtoError(f"{name} does not hold JSON: {exc}") from None
        return _read(value)
    if fd.type == FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(value).decode()
    return value


def _unset(fd: FieldDescriptor, value: Any) -> bool:
    """An empty string or zero Time: what Go writes for a field JSON leaves out."""
    if fd.type == FieldDescriptor.TYPE_STRING:
        return value == ""
    return (
        fd.message_type is not None
        and fd.message_type.full_name == _TIME
        and not (value.seconds or value.nanos)
    )


def _rfc3339(value: Any, micro: bool = False) -> str:
    t = datetime.fromtimestamp(value.seconds, UTC)
    if micro:
        return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{value.nanos // 1000:06d}Z"
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- JSON -> message ---


def _fill(msg: Message, data: Any, path: str) -> None:
    desc = msg.DESCRIPTOR
    name = desc.full_name
    msg.SetInParent()
    if name in _SPECIAL:
        _SPECIAL[name](msg, data, path)
        return
    if not isinstance(data, dict):
        raise ProtoError(f"{path}: expected an object, got {_json_kind(data)}")
    for key, value in data.items():
        fd = desc.fields_by_name.get(key)
        if fd is None or value is None:
            continue  # unknown fields are dropped, as Go's decoders do
        _fill_field(msg, fd, value, f"{path}.{key}")
    for parent, field in INLINE:
        if parent == name:
            sub = getattr(msg, field)
            _fill(sub, data, path)
            if not sub.ListFields():
                msg.ClearField(field)


def _fill_field(msg: Message, fd: FieldDescriptor, value: Any, path: str) -> None:
    target = getattr(msg, fd.name)
    if _is_map(fd):
        if not isinstance(value, dict):
            raise ProtoError(f"{path}: expected an object, got {_json_kind(value)}")
        vfd = fd.message_type.fields_by_name["value"]
        for k, v in value.items():
            if vfd.type == FieldDescriptor.TYPE_MESSAGE:
                _fill(target[k], v, f"{path}.{k}")
            else:
                target[k] = _scalar(vfd, v, f"{path}.{k}")
    elif fd.is_repeated:
        if not isinstance(value, list):
            raise ProtoError(f"{path}: expected a list, got {_json_kind(value)}")
        for i, v in enumerate(value):
            if fd.type == FieldDescriptor.TYPE_MESSAGE:
                _fill(target.add(), v, f"{path}[{i}]")
            else:
                target.append(_scalar(fd, v, f"{path}[{i}]"))
    elif fd.type == FieldDescriptor.TYPE_MESSAGE:
        _fill(target, value, path)
    else:
        setattr(msg, fd.name, _scalar(fd, value, path))


def _scalar(fd: FieldDescriptor, value: Any, path: str) -> Any:
    t = fd.type
    if t == FieldDescriptor.TYPE_STRING and isinstance(value, str):
        return value
    if t == FieldDescriptor.TYPE_BOOL and isinstance(value, bool):
        return value
    if t == FieldDescriptor.TYPE_BYTES and isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except ValueError:
            raise ProtoError(f"{path}: illegal base64 data") from None
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif t not in (
        FieldDescriptor.TYPE_STRING,
        FieldDescriptor.TYPE_BOOL,
        FieldDescriptor.TYPE_BYTES,
    ):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    raise ProtoError(f"{path}: cannot hold {_json_kind(value)} {value!r}")


def _json_kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "a number"
    )


def _is_map(fd: FieldDescriptor) -> bool:
    return (
        fd.is_repeated
        and fd.type == FieldDescriptor.TYPE_MESSAGE
        and fd.message_type.GetOptions().map_entry
    )


def _fill_time(msg: Any, data: Any, path: str) -> None:
    if not isinstance(data, str):
        raise ProtoError(f"{path}: expected an RFC 3339 time string, got {_json_kind(data)}")
    try:
        t = datetime.fromisoformat(data)
    except ValueError:
        raise ProtoError(f"{path}: {data!r} is not an RFC 3339 time") from None
    if t.tzinfo is None:
        raise ProtoError(f"{path}: {data!r} has no time zone")
    msg.seconds = (t - _EPOCH) // timedelta(seconds=1)
    msg.nanos = t.microsecond * 1000


def _fill_int_or_string(msg: Any, data: Any, path: str) -> None:
    if isinstance(data, str):
        msg.type, msg.strVal = 1, data
    elif isinstance(data, int) and not isinstance(data, bool):
        msg.type, msg.intVal = 0, data
    else:
        raise ProtoError(f"{path}: expected an integer or a string, got {_json_kind(data)}")


def _fill_quantity(msg: Any, data: Any, path: str) -> None:
    if isinstance(data, bool) or not isinstance(data, str | int | float):
        raise ProtoError(f"{path}: expected a quantity, got {_json_kind(data)}")
    msg.string = data if isinstance(data, str) else format(data, "g")


def _fill_verbs(msg: Any, data: Any, path: str) -> None:
    if not isinstance(data, list) or not all(isinstance(v, str) for v in data):
        raise ProtoError(f"{path}: expected a list of strings")
    msg.items.extend(data)


def _fill_raw(msg: Any, data: Any, path: str) -> None:
    raw = _json_encode(data)
    if msg.DESCRIPTOR.full_name == _FIELDS_V1:
        msg.Raw = raw
    else:
        msg.raw = raw


_SPECIAL = {
    _TIME: _fill_time,
    _MICRO_TIME: _fill_time,
    _INT_OR_STRING: _fill_int_or_string,
    _QUANTITY: _fill_quantity,
    _VERBS: _fill_verbs,
    _RAW_EXTENSION: _fill_raw,
    _FIELDS_V1: _fill_raw,
}
