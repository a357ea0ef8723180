"""Content negotiation for the simulated API: which encoding a body is in, which to answer in.

Exists so server.py handles objects as JSON dicts whatever the client speaks.
Request bodies are decoded by their Content-Type: JSON (also when there is no
Content-Type), YAML, or `application/vnd.kubernetes.protobuf` (kubeproto.py); any
other type is answered 415 with the real server's message. Responses honour the
Accept header in its order: JSON for `application/json`, `application/*` and `*/*`,
protobuf for `application/vnd.kubernetes.protobuf` when the answer's kind has a
message (otherwise the next acceptable type). An Accept header naming nothing the
sim speaks is answered 406. The `as=Table` responses are server.py's business; any
other `as=` (metadata-only views) is not served: such a JSON range gets the whole
object, such a protobuf range is skipped. Patch bodies are read by server.py.
"""

from __future__ import annotations

from typing import Any

import msgspec
import yaml
from aiohttp import web

from bjc.sim import kubeproto
from bjc.sim.store import ApiError, Obj, bad_request

JSON = "application/json"
PROTOBUF = kubeproto.MEDIA_TYPE
_YAML = ("application/yaml", "application/x-yaml")
_ANY = (JSON, "application/*", "*/*")

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def negotiate(accept: str) -> str:
    """The media type to answer in, JSON or PROTOBUF (``encode`` falls back to JSON
    for kinds without a message); ApiError 406 if nothing is acceptable."""
    if not accept or (PROTOBUF not in accept and JSON in accept):
        return JSON  # the common case, without parsing
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if media in _ANY:
            return JSON
        if media == PROTOBUF and not any(p.startswith("as=") for p in params):
            return PROTOBUF
    raise ApiError(
        406,
        "NotAcceptable",
        "406: Not Acceptable\n\nAvailable representations: application/json, "
        "application/vnd.kubernetes.protobuf, application/json;stream=watch, "
        "application/vnd.kubernetes.protobuf;stream=watch",
    )


def encode(obj: Obj, media: str) -> tuple[bytes, str]:
    """``obj`` as (body, content type): protobuf if asked and the kind has a message."""
    if media == PROTOBUF and kubeproto.message_class(
        obj.get("apiVersion", ""), obj.get("kind", "")
    ):
        try:
            return kubeproto.encode(obj), PROTOBUF
        except kubeproto.ProtoError as exc:
            raise ApiError(500, "InternalError", f"cannot encode as protobuf: {exc}") from None
    return _encode(obj), JSON


def parse_json(raw: bytes) -> Any:
    try:
        return _decode(raw)
    except msgspec.DecodeError as exc:
        raise bad_request(f"error decoding request body: {exc}") from None


async def read_body(request: web.Request, api_version: str = "", kind: str = "") -> Any:
    """The request body as JSON data (None if empty); ``api_version``/``kind`` are what a
    protobuf body without type information is taken to be."""
    raw = await request.read()
    if not raw:
        return None
    ctype = request.content_type if "Content-Type" in request.headers else JSON
    if ctype == JSON:
        return parse_json(raw)
    if ctype in _YAML:
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise bad_request(f"error decoding YAML request body: {exc}") from None
    if ctype == PROTOBUF:
        try:
            return kubeproto.decode(raw, api_version, kind)
        except kubeproto.ProtoError as exc:
            raise bad_request(f"the object provided is unrecognized: {exc}") from None
    raise ApiError(
        415,
        "UnsupportedMediaType",
        "the body of the request was in an unknown format - accepted media types include: "
        "application/json, application/yaml, application/vnd.kubernetes.protobuf",
    )
