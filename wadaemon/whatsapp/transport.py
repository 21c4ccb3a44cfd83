"""The transport boundary: what the rest of wadaemon knows of a WhatsApp connection.

Two implementations: ``wadaemon.whatsapp.neonize_transport`` (the real neonize client, used in
production) and ``wadaemon.whatsapp.simphone`` (a simulated phone for tests and the demo). Both
hand over *raw events* — ``RawEvent``: the neonize protobuf class name and its serialised bytes,
exactly the capture-file format — so the same journal, the same translation code
(``wadaemon.whatsapp.translate``) and the same actors run behind either. Bytes rather than
protobuf objects cross the boundary because the journal must persist the event before the
hand-over completes, and because no neonize type may leave this package.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import msgspec

from wadaemon.domain import GroupInfo


class RawEvent(msgspec.Struct, frozen=True):
    """One WhatsApp event as neonize delivered it.

    ``name`` is the class name in ``neonize.proto.Neonize_pb2`` (``Message``, ``Receipt``,
    ``HistorySync``, ``Connected``, ...); ``data`` is that protobuf's ``SerializeToString()``.
    """

    name: str
    data: bytes


class SendResult(msgspec.Struct, frozen=True):
    message_id: str
    ts_ms: int


class HistoryRequestUnavailable(Exception):
    """This transport cannot ask the phone for older history (neonize 0.5.2 as released: see
    docs/whatsapp.md). Reported in account status and /diag, never worked around."""


class TransportError(Exception):
    """Sending or requesting failed; the message says why."""


#: Whether this process may still hold the account's connection: its ownership lease's fence
#: (``wadaemon.cluster.fence.Fence.valid``), callable from any thread. A transport asks it
#: before every connection it opens *by itself* (a reconnect after a drop): a process frozen
#: past its lease and resumed must not reconnect an account another instance now holds, even
#: if its reconnect thread runs before the cancellation that stops the transport. False is
#: final: the account's subtree is being stopped.
Licence = Callable[[], bool]


def unconditional() -> bool:
    """The licence of a transport that no lease governs (pairing, replay, tests)."""
    return True


class RawEventSink(Protocol):
    """Where a transport hands events. ``deliver`` returns only once the event is durable
    (journaled); blocking here is the backpressure that slows WhatsApp's dispatch thread."""

    def deliver(self, event: RawEvent) -> None: ...


class Transport(Protocol):
    """One WhatsApp account's connection. Methods are blocking; trio callers use worker threads."""

    account_id: str

    @property
    def supports_history_requests(self) -> bool:
        """Whether ``request_history`` can work; shown in account status and /diag."""
        ...

    def start(self, sink: RawEventSink) -> None:
        """Connect and start delivering events to ``sink`` from the transport's own thread."""
        ...

    def stop(self) -> None:
        """Disconnect; no event is delivered after this returns."""
        ...

    def send_text(self, to_jid: str, text: str) -> SendResult:
        """Send a text message; blocks until the server acknowledged it."""
        ...

    def request_history(self, chat_jid: str, oldest_id: str, oldest_from_me: bool,
                        oldest_ts_ms: int, count: int) -> None:
        """Ask the phone for up to ``count`` messages older than the anchor; the answer arrives
        later as a ``HistorySync`` event of type ON_DEMAND. Raises HistoryRequestUnavailable."""
        ...

    def resolve_lid(self, lid_jid: str) -> str:
        """The phone-number JID of a LID from the client's LID store, or "" when unknown."""
        ...

    def group_info(self, group_jid: str) -> GroupInfo:
        """The group's subject and participants, asked from WhatsApp now (a round trip: call it
        from a worker thread). Raises TransportError when not connected or WhatsApp refuses."""
        ...
