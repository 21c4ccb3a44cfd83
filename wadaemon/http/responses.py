"""JSON responses encoded with msgspec.

Response bodies are msgspec Structs declared with ``rename="camel"``: the Python side keeps
snake_case names, the wire gets the exact camelCase names of the HTTP contract (the Flutter app and ops
scripts read them). msgspec encodes ``datetime`` as RFC 3339, i.e. ISO-8601 as the contract requires.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

_encoder = msgspec.json.Encoder()


def json_response(body: object, *, status: int = 200) -> web.Response:
    """``body`` (a Struct, or anything msgspec encodes) as an ``application/json`` response."""
    return web.Response(body=_encoder.encode(body), status=status, content_type="application/json")
