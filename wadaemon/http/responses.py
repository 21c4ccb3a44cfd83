"""JSON responses encoded with msgspec.

Response bodies are msgspec Structs declared with ``rename="camel"``: the Python side keeps
snake_case names, the wire gets the exact camelCase names of the HTTP contract (the Flutter app and ops
scripts read them). msgspec encodes ``datetime`` as RFC 3339, i.e. ISO-8601 as the contract requires.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

_encoder = msgspec.json.Encoder()


def encode_body(body: object) -> bytes:
    return _encoder.encode(body)


def json_response(body: object, *, status: int = 200) -> web.Response:
    """``body`` (a Struct, or anything msgspec encodes; bytes: already encoded) as an
    ``application/json`` response."""
    payload = body if isinstance(body, bytes) else _encoder.encode(body)
    return web.Response(body=payload, status=status, content_type="application/json")
