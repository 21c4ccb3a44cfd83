"""Who may call what: one middleware, keyed by the matched route's level (``routing.Level``).

* ``open`` routes pass untouched (probes, /metrics, /openapi.json).
* ``api`` routes want ``Authorization: Bearer <API_TOKEN>``; ``ADMIN_TOKEN`` is accepted too
  (an operator holding the stronger token can read what the weaker one can). When
  ``API_TOKEN`` is unset they are served to loopback peers only and refused to everyone else
  with 403: the peer is the TCP peer address of the connection, never a forwarding header
  (``X-Forwarded-For``, ``Forwarded``), which any client can write.
* ``admin`` routes want ``ADMIN_TOKEN`` and are refused to everyone when it is unset (403
  ``admin_disabled``): an unconfigured admin surface must not fall back to "loopback is fine".

A missing credential is 401 (with ``WWW-Authenticate: Bearer``), a wrong one 403. Tokens are
compared with ``hmac.compare_digest`` on bytes (constant time for equal lengths; a length
mismatch returns early, which reveals only the length), and never logged or echoed: the
answer says *that* the token is wrong, not what was received.

Rate limits apply after authentication, per credential (``ratelimit.RateLimiter``).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from wadaemon.http.errors import ApiError
from wadaemon.http.ratelimit import RateLimiter
from wadaemon.http.routing import Route

ROUTE = web.RequestKey("wadaemon_route", Route)


@dataclass(frozen=True)
class AuthConfig:
    api_token: str | None = None
    admin_token: str | None = None

    def __repr__(self) -> str:  # never print a token, even in a traceback's locals
        return (f"AuthConfig(api_token={'set' if self.api_token else 'unset'}, "
                f"admin_token={'set' if self.admin_token else 'unset'})")


def peer_is_loopback(request: web.Request) -> bool:
    """The connection's TCP peer is a loopback address (any 127.x, ::1, ::ffff:127.x)."""
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    if not isinstance(peer, tuple) or not peer:
        return False  # a Unix socket or an unknown transport: not provably local
    try:
        address = ipaddress.ip_address(str(peer[0]).split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("the Authorization header must be 'Bearer <token>'")
    return token.strip()


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, {"WWW-Authenticate": "Bearer"})


def _matches(given: str, expected: str | None) -> bool:
    return expected is not None and hmac.compare_digest(given.encode(), expected.encode())


def principal_of(token: str | None, request: web.Request) -> str:
    """The key rate limits count under: a digest of the credential (never the token itself),
    or the peer address for tokenless loopback calls."""
    if token is not None:
        return "token:" + hashlib.sha256(token.encode()).hexdigest()[:16]
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    return f"peer:{peer[0] if isinstance(peer, tuple) and peer else '?'}"


def check_access(route: Route, config: AuthConfig, request: web.Request) -> str | None:
    """Raise the refusal for this request, or return the credential it presented."""
    if route.level == "open":
        return None
    token = bearer_token(request)
    if route.level == "admin":
        if config.admin_token is None:
            raise ApiError(403, "admin_disabled", "admin routes are disabled: ADMIN_TOKEN is not set")
        if token is None:
            raise _unauthorized("this route needs the admin bearer token")
        if not _matches(token, config.admin_token):
            raise ApiError(403, "forbidden", "the admin token is not valid")
        return token
    if config.api_token is None:
        if token is not None and _matches(token, config.admin_token):
            return token
        if not peer_is_loopback(request):
            raise ApiError(403, "forbidden",
                           "API_TOKEN is not set: data routes answer loopback clients only")
        return token
    if token is None:
        raise _unauthorized("this route needs a bearer token")
    if not (_matches(token, config.api_token) or _matches(token, config.admin_token)):
        raise ApiError(403, "forbidden", "the token is not valid")
    return token


def auth_middleware(routes: Mapping[web.AbstractRoute, Route], config: AuthConfig,
                    limiter: RateLimiter) -> Middleware:
    """``routes`` maps each aiohttp route to its declaration; requests that match none (the
    router's own 404/405) pass through to their error."""

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = routes.get(request.match_info.route)
        if route is None:
            return await handler(request)
        token = check_access(route, config, request)
        if route.rate_limit is not None:
            limiter.take(route.rate_limit, principal_of(token, request))
        request[ROUTE] = route
        return await handler(request)

    return authenticate
