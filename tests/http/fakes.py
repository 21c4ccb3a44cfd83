"""Test doubles for the HTTP tests: a store that implements only what the probes call, and a
loopback client that returns status, headers and decoded JSON for any status code."""

from __future__ import annotations

import http.client
import json
import threading
from dataclasses import dataclass
from email.message import Message
from typing import Any, cast

from wadaemon.domain import AccountDoc
from wadaemon.store.contract import Store

#: Upper bound for a simulated hang, so a broken test cannot wedge the run.
HANG_LIMIT_S = 30.0


class FakeStore:
    """``backend``, ``ping``, ``get_account``, ``list_account_ids`` — scripted.

    ``ping_result`` / ``read_error`` choose answers; ``hang_ping`` / ``hang_reads`` make the
    call block until ``release`` is set (``entered`` is set as a hanging call starts).
    """

    backend = "fake"

    def __init__(self, accounts: dict[str, AccountDoc | None] | None = None) -> None:
        self.accounts: dict[str, AccountDoc | None] = dict(accounts or {})
        self.ping_result: bool | BaseException = True
        self.read_error: BaseException | None = None
        self.hang_ping = False
        self.hang_reads = False
        self.entered = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()
        self.calls: list[str] = []

    def as_store(self) -> Store:
        """This fake where a ``Store`` is expected. It has only the calls the probes make, so a
        code path calling anything else fails with an AttributeError, which the test reports."""
        return cast(Store, self)

    def _record(self, call: str, hang: bool) -> None:
        with self._lock:
            self.calls.append(call)
        if hang:
            self.entered.set()
            self.release.wait(HANG_LIMIT_S)

    def ping(self) -> bool:
        self._record("ping", self.hang_ping)
        if isinstance(self.ping_result, BaseException):
            raise self.ping_result
        return self.ping_result

    def list_account_ids(self) -> list[str]:
        self._record("list_account_ids", self.hang_reads)
        if self.read_error is not None:
            raise self.read_error
        return sorted(self.accounts)

    def get_account(self, account_id: str) -> AccountDoc | None:
        self._record(f"get_account:{account_id}", self.hang_reads)
        if self.read_error is not None:
            raise self.read_error
        return self.accounts.get(account_id)


@dataclass
class Reply:
    status: int
    headers: Message
    raw: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.raw)


def fetch(port: int, path: str, method: str = "GET", *, timeout: float = 5.0) -> Reply:
    """One request to 127.0.0.1:``port``; raises if no answer within ``timeout`` seconds."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        connection.close()
