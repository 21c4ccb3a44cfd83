"""Hostile HTTP clients against a real server on loopback: malformed requests get the JSON
envelope and one log line without request bytes; idle and half-sent connections neither pile
up nor keep the probes from answering."""

from __future__ import annotations

import json
import logging
import socket
import time

import pytest

from tests.http.conftest import Serve
from tests.http.fakes import fetch
from wadaemon.http import protocol

SECRET = "Bearer sk-live-SECRET-TOKEN-1234"


def raw_request(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks: list[bytes] = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def test_malformed_request_gets_json_and_one_line_without_request_bytes(
        serve: Serve, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(protocol, "_parser_log", protocol.RateLimitedLog(interval_s=3600))
    server = serve()
    caplog.set_level(logging.DEBUG)
    bad = f"GET /health HTTP/1.1\r\nAuthorization: {SECRET}\r\nBad\x01Header: x\r\n\r\n".encode()
    answer = raw_request(server.port, bad)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith((b"HTTP/1.1 400", b"HTTP/1.0 400"))
    assert b"application/json" in head
    assert json.loads(body) == {"success": False, "error": {"code": "bad_request", "message": "malformed HTTP request"}}
    for _ in range(20):  # a flood: still one line
        raw_request(server.port, bad)
    text = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert "SECRET-TOKEN" not in text
    lines = [r for r in caplog.records if "malformed request" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_probes_answer_when_the_connection_cap_is_reached(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(protocol, "MAX_CONNECTIONS", 20)
    server = serve()
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(40)]
    try:
        for sock in idle[:10]:
            sock.sendall(b"GET /hea")  # half-sent heads
        reply = fetch(server.port, "/health", timeout=5.0)
        assert reply.status == 200
        reply = fetch(server.port, "/diag", timeout=5.0)
        assert reply.status == 200
    finally:
        for sock in idle:
            sock.close()


def test_a_half_sent_request_head_is_closed_after_the_header_timeout(
        serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(protocol, "HEADER_TIMEOUT_S", 0.3)
    server = serve()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # never finished
        began = time.monotonic()
        assert sock.recv(100) == b""  # the server closed it
        assert time.monotonic() - began < 4


def test_the_accept_loop_flood_line_is_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    protocol.quiet_accept_floods()
    caplog.set_level(logging.ERROR, "asyncio")
    logger = logging.getLogger("asyncio")
    for _ in range(1000):
        logger.error("socket.accept() out of system resource")
    assert len([r for r in caplog.records if "out of system resource" in r.getMessage()]) == 1


def test_an_idle_keep_alive_connection_is_closed(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(protocol, "KEEPALIVE_S", 0.3)
    server = serve()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
        began = time.monotonic()
        while sock.recv(65536):  # the rest of the body, then EOF once the server drops it
            pass
        assert time.monotonic() - began < 4  # aiohttp's default keeps it for an hour
