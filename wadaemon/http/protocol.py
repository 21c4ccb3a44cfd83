"""The connection level of the HTTP server: hostile clients must not blind the probes or the log.

aiohttp's defaults suit a server behind a proxy, not probes on a shared host:

* **Parser errors.** A request aiohttp cannot parse is logged by aiohttp at ERROR with a
  traceback whose text echoes the raw request bytes — ``Authorization: Bearer …`` included —
  and answered ``text/plain``. Any client could flood the log with tokens that way.
  ``_Handler.handle_error`` logs one WARNING line naming the exception type and status only,
  at most one per ``LOG_INTERVAL_S`` (with a count of the ones left out), and answers with the
  JSON error envelope every endpoint uses (``wadaemon.http.errors``).
* **Idle connections.** aiohttp keeps an idle keep-alive connection for an hour and waits for
  a half-sent request header for as long as the client likes; at the usual 1,024 open files,
  ~1,000 such connections exhaust descriptors and every probe times out. Idle connections are
  closed after ``KEEPALIVE_S``; a connection that has not finished its request head within
  ``HEADER_TIMEOUT_S`` is closed. At ``MAX_CONNECTIONS`` open connections, a new one is served
  only if it is a probe (``/health``, ``/ready``, ``/diag``, ``/metrics``); any other request is
  answered 503 and closed at once, and the oldest idle connection is dropped to make room.
* **The accept loop.** When descriptors run out, asyncio logs "socket.accept() out of system
  resource" at every loop iteration (240,000 lines in 35 s were seen); a filter on asyncio's
  logger lets one such line through per ``LOG_INTERVAL_S`` with the count left out. The unit
  raises ``LimitNOFILE`` so the cap, not the descriptor limit, is what a flood meets.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from wadaemon.http.errors import error_response

log = logging.getLogger("wadaemon.http")

KEEPALIVE_S = 15.0
HEADER_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 512
LOG_INTERVAL_S = 10.0
PROBE_PATHS = (b"/health", b"/ready", b"/diag", b"/metrics")


def header_timeout_s() -> float:
    return HEADER_TIMEOUT_S


class RateLimitedLog:
    """One line per ``interval_s``; the ones in between are counted and reported with the next."""

    def __init__(self, interval_s: float = LOG_INTERVAL_S) -> None:
        self._interval_s = interval_s
        self._next = 0.0
        self._suppressed = 0
        self._lock = threading.Lock()

    def admit(self) -> int | None:
        """None: stay quiet; otherwise log now, mentioning the returned count left out."""
        now = time.monotonic()
        with self._lock:
            if now < self._next:
                self._suppressed += 1
                return None
            self._next = now + self._interval_s
            left_out, self._suppressed = self._suppressed, 0
            return left_out


_parser_log = RateLimitedLog()


class _Connections:
    """The open connections of one server, oldest first (asyncio's thread only)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: dict[_Handler, None] = {}


class _Handler(RequestHandler):
    """aiohttp's protocol with the module docstring's rules."""

    def __init__(self, connections: _Connections, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._connections = connections
        self._head_timer: asyncio.TimerHandle | None = None
        self._over_cap = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        connections = self._connections
        if len(connections.open) >= connections.limit:
            self._over_cap = True
            self._drop_an_idle_one()
        connections.open[self] = None
        self._head_timer = self._loop.call_later(header_timeout_s(), self._head_timeout)

    def _drop_an_idle_one(self) -> None:
        for other in self._connections.open:  # oldest first
            if other is not self and other._current_request is None and other.transport is not None:
                other.close_now()
                return

    def close_now(self) -> None:
        transport = self.transport
        self.force_close()
        if transport is not None:
            transport.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._connections.open.pop(self, None)
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self._request_count == 0:
            self.close_now()

    def data_received(self, data: bytes) -> None:
        if self._over_cap and self._request_count == 0 and not self._is_probe(data):
            self._over_cap = False
            if self.transport is not None:
                self.transport.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                     b"Connection: close\r\nContent-Length: 85\r\n\r\n"
                                     + _OVER_CAP_BODY)
            self.close_now()
            return
        super().data_received(data)
        if self._request_count and self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    @staticmethod
    def _is_probe(data: bytes) -> bool:
        _, _, rest = data.partition(b" ")
        return rest.startswith(PROBE_PATHS)

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        left_out = _parser_log.admit()
        if left_out is not None:
            code = getattr(exc, "code", status)
            log.warning("[http] malformed request rejected status=%s error=%s%s", code,
                        type(exc).__name__ if exc is not None else "-",
                        f" (and {left_out} more since the last line)" if left_out else "")
        if request.writer.output_size > 0:
            raise ConnectionError("response already started: cannot send an error response")
        response = error_response(400 if status < 500 else status,
                                  "bad_request" if status < 500 else "internal",
                                  "malformed HTTP request" if status < 500 else "internal error")
        response.force_close()
        return response


_OVER_CAP_BODY = b'{"success":false,"error":{"code":"unavailable","message":"too many connections"}}    '
assert len(_OVER_CAP_BODY) == 85


def protocol_factory(runner: web.AppRunner, *, max_connections: int | None = None) -> Any:
    """What ``loop.create_server`` needs to serve ``runner``'s app (after ``setup()``) with
    ``_Handler`` connections; aiohttp's ``Server`` still tracks them (graceful shutdown)."""
    server = runner.server
    assert server is not None
    connections = _Connections(max_connections or MAX_CONNECTIONS)
    kwargs = dict(server._kwargs)
    kwargs["keepalive_timeout"] = KEEPALIVE_S

    def make_handler() -> RequestHandler:
        return _Handler(connections, server, loop=server._loop, **kwargs)

    return make_handler


class _AcceptFlood(logging.Filter):
    """Rate-limits asyncio's "out of system resource" accept-loop line (module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._limit = RateLimitedLog()

    def filter(self, record: logging.LogRecord) -> bool:
        if "out of system resource" not in str(record.msg):
            return True
        left_out = self._limit.admit()
        if left_out is None:
            return False
        if left_out:
            record.msg = f"{record.msg} (and {left_out} more since the last line)"
        return True


def quiet_accept_floods() -> None:
    """Install the accept-loop filter on asyncio's logger once."""
    logger = logging.getLogger("asyncio")
    if not any(isinstance(f, _AcceptFlood) for f in logger.filters):
        logger.addFilter(_AcceptFlood())
