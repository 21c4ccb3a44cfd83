"""The one route table: every endpoint declared once, feeding aiohttp *and* the OpenAPI document.

A route is declared with its method, path, auth level, the msgspec Struct its handler encodes
(``response``), the Struct it decodes (``body``) and the query parameters it reads (``query``,
each a ``Param`` that both parses the request and describes itself in the document). Because
the handler and the document share these objects, the document cannot drift from what is
served: a route that exists is in the document by construction, and a field renamed in a
Struct is renamed in both.

Levels (``wadaemon.http.auth`` enforces them before the handler runs):

* ``open``  — probes, ``/metrics``, ``/openapi.json``: no credentials, ever;
* ``api``   — data routes: ``API_TOKEN`` (or ``ADMIN_TOKEN``), loopback-only when it is unset;
* ``admin`` — ``ADMIN_TOKEN`` only; refused to everyone when it is unset.

``rate_limit`` names a bucket (``send``, ``backfill``): requests through it are counted per
credential (``wadaemon.http.ratelimit``).

Parameter errors are ``400 bad_parameter`` naming the parameter; body errors are
``400 bad_body`` with msgspec's path to the offending field (``$.to``). Neither echoes the
value received (it could be message text).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import msgspec
from aiohttp import web

from wadaemon.http.errors import ApiError

Level = Literal["open", "api", "admin"]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")

#: Largest request body accepted (413 beyond it). A send is a short text; nothing else has a body.
MAX_BODY_BYTES = 64 * 1024


class BadParameter(ApiError):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(400, "bad_parameter", f"{name}: {message}")


@dataclass(frozen=True)
class Param:
    """One query parameter: its JSON schema (for the document) and how it is parsed."""

    name: str
    schema: dict[str, Any]
    description: str
    parse_value: Callable[[str], Any]
    default: Any = None

    def parse(self, request: web.Request) -> Any:
        raw = request.query.getall(self.name, [])
        if not raw:
            return self.default
        if len(raw) > 1:
            raise BadParameter(self.name, "given more than once")
        return self.parse_value(raw[0])


def int_param(name: str, *, minimum: int, maximum: int, default: int, description: str) -> Param:
    def parse(raw: str) -> int:
        if not raw.isascii() or not raw.isdigit():
            raise BadParameter(name, f"must be a whole number from {minimum} to {maximum}")
        value = int(raw)
        if not minimum <= value <= maximum:
            raise BadParameter(name, f"must be from {minimum} to {maximum}")
        return value

    schema = {"type": "integer", "minimum": minimum, "maximum": maximum, "default": default}
    return Param(name, schema, description, parse, default)


def choice_param(name: str, choices: Sequence[str], *, default: str, description: str) -> Param:
    def parse(raw: str) -> str:
        if raw not in choices:
            raise BadParameter(name, f"must be one of {', '.join(choices)}")
        return raw

    schema = {"type": "string", "enum": list(choices), "default": default}
    return Param(name, schema, description, parse, default)


def text_param(name: str, *, max_length: int, description: str) -> Param:
    def parse(raw: str) -> str:
        if not raw or len(raw) > max_length:
            raise BadParameter(name, f"must be 1 to {max_length} characters")
        return raw

    return Param(name, {"type": "string", "minLength": 1, "maxLength": max_length}, description, parse)


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    level: Level
    summary: str
    #: The Struct a success answer encodes; None for a non-JSON answer (``media_type``).
    response: Any
    status: int = 200
    body: Any = None
    query: tuple[Param, ...] = ()
    #: Error statuses this route answers besides the ones every route of its level can.
    errors: tuple[int, ...] = ()
    #: Other non-error answers, e.g. /ready's 503 with the same body.
    also: dict[int, Any] = field(default_factory=dict)
    media_type: str = "application/json"
    rate_limit: str | None = None
    tag: str = ""

    @property
    def path_params(self) -> list[str]:
        return [part[1:-1] for part in self.path.split("/") if part.startswith("{")]


class RouteTable:
    """Routes of one module; ``app.build_app`` gathers every module's table."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.routes: list[Route] = []

    def route(self, method: str, path: str, **options: Any) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.routes.append(Route(method, path, handler, tag=options.pop("tag", self.tag), **options))
            return handler

        return register

    def get(self, path: str, **options: Any) -> Callable[[Handler], Handler]:
        return self.route("GET", path, **options)

    def post(self, path: str, **options: Any) -> Callable[[Handler], Handler]:
        return self.route("POST", path, **options)


async def read_body(request: web.Request, kind: type[T]) -> T:
    """The JSON body decoded into ``kind``; 400 naming the bad field, 413 when too large."""
    raw = await request.read()  # aiohttp raises 413 past client_max_size
    if not raw:
        raise ApiError(400, "bad_body", "a JSON body is required")
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        raise ApiError(400, "bad_body", str(exc)) from None
    except msgspec.DecodeError:
        raise ApiError(400, "bad_body", "the body is not valid JSON") from None
