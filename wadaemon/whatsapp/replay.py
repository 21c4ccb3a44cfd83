"""A transport that plays a capture file back, for ``wadaemon replay ACCOUNT FILE``.

Lines go through exactly the path live events take — journal, translation, actors — so a
capture from production reproduces what the daemon did with it. A bad line is reported with its
line number and skipped; the rest still lands.

The file is read as bytes, line by line, so one line that is not UTF-8 is one bad line, not
the end of the file. Each event is also translated here (translation is pure) to learn which
*capture lines* the translator rejects — an unusable JID, an unparsable protobuf — so the
summary names them by line number; the event still travels the live path, where the
dispatcher logs the same rejection by journal seq and the rest of a partly bad chunk lands.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from wadaemon.domain import GroupInfo, RejectedEvent
from wadaemon.whatsapp.capture import decode_capture_line
from wadaemon.whatsapp.translate import translate
from wadaemon.whatsapp.transport import (
    HistoryRequestUnavailable,
    RawEventSink,
    SendResult,
    TransportError,
)

log = logging.getLogger("wadaemon.replay")


class ReplayTransport:
    """Plays ``path`` (None: nothing, for draining what is already journaled)."""

    def __init__(self, account_id: str, path: Path | None) -> None:
        self.account_id = account_id
        self.path = path
        self.delivered = 0
        self.bad_lines: list[tuple[int, str]] = []
        #: (line, reason) of lines that decoded but whose event (or part of it) was rejected.
        self.rejected_lines: list[tuple[int, str]] = []
        self.finished = threading.Event()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    supports_history_requests = False

    def start(self, sink: RawEventSink) -> None:
        self._thread = threading.Thread(target=self._play, args=(sink,), name=f"replay-{self.account_id}", daemon=True)
        self._thread.start()

    def _play(self, sink: RawEventSink) -> None:
        if self.path is None:
            self.finished.set()
            return
        try:
            with self.path.open("rb") as lines:
                for number, line in enumerate(lines, start=1):
                    if self._stop.is_set():
                        return
                    if not line.strip():
                        continue
                    try:
                        raw = decode_capture_line(line)
                    except ValueError as exc:
                        self.bad_lines.append((number, str(exc)))
                        log.error("[replay] %s:%d skipped: %s", self.path, number, exc)
                        continue
                    for event in translate(self.account_id, raw):
                        if isinstance(event, RejectedEvent):
                            self.rejected_lines.append((number, event.reason))
                            log.warning("[replay] %s:%d rejected %s: %s", self.path, number,
                                        event.event_name, event.reason)
                    sink.deliver(raw)
                    self.delivered += 1
        except Exception as exc:  # the journal closing under us at shutdown, an unreadable file
            log.error("[replay] stopped reading %s: %s", self.path, exc)
            self.bad_lines.append((0, f"reading stopped: {exc}"))
        finally:
            self.finished.set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def send_text(self, to_jid: str, text: str) -> SendResult:
        raise TransportError("a replay cannot send messages")

    def request_history(self, chat_jid: str, oldest_id: str, oldest_from_me: bool,
                        oldest_ts_ms: int, count: int) -> None:
        raise HistoryRequestUnavailable("a replay cannot request history")

    def resolve_lid(self, lid_jid: str) -> str:
        return ""

    def group_info(self, group_jid: str) -> GroupInfo:
        raise TransportError("a replay cannot ask WhatsApp about a group")
