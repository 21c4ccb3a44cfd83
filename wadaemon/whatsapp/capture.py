"""Capture files: every raw event as one JSON line ``{"event": NAME, "data": BASE64}``.

The line holds exactly a ``RawEvent`` — the neonize class name and the protobuf bytes — so a
capture taken in production replays through the same journal and translator
(``wadaemon replay``). JSON Lines keeps captures greppable and appendable by a crashing process
(at worst the last line is torn, and a torn line is reported, not fatal).
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
from pathlib import Path
from typing import BinaryIO

import msgspec

from wadaemon.whatsapp.transport import RawEvent

log = logging.getLogger("wadaemon.capture")


class CaptureLine(msgspec.Struct, frozen=True):
    event: str
    data: str


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(CaptureLine)


def encode_capture_line(raw: RawEvent) -> str:
    """One capture line, without the trailing newline."""
    line = CaptureLine(event=raw.name, data=base64.b64encode(raw.data).decode("ascii"))
    return _encoder.encode(line).decode("utf-8")


def decode_capture_line(line: str | bytes) -> RawEvent:
    """The RawEvent of one capture line; ValueError saying what is wrong with a bad one. A
    leading UTF-8 byte-order mark (editors on Windows add one to line 1) is not an error."""
    text = line.strip()
    text = text.removeprefix(b"\xef\xbb\xbf") if isinstance(text, bytes) else text.removeprefix("\ufeff")
    if isinstance(text, bytes):
        try:
            text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"capture line is not UTF-8 (byte {exc.start})") from None
    if not text:
        raise ValueError("empty capture line")
    try:
        parsed = _decoder.decode(text)
    except msgspec.ValidationError as exc:
        raise ValueError(f"capture line does not match {{event, data}}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ValueError(f"capture line is not JSON: {exc}") from None
    if not parsed.event:
        raise ValueError("capture line has an empty event name")
    try:
        data = base64.b64decode(parsed.data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"capture line data is not base64: {exc}") from None
    return RawEvent(parsed.event, data)


class CaptureWriter:
    """Appends raw events to a capture file, one line each.

    Called from the transport's thread (inside ``RawEventSink.deliver``), possibly from more
    than one; a lock keeps lines whole. The capture is a debugging record, the journal is what
    makes events durable, so a capture that cannot be written (disk full, a broken path) must
    never cost an event: ``write`` does not raise ``OSError``, it counts the failure
    (``failures``) and logs it once per kind (exception class and errno), not once per event,
    so a full disk does not also flood the log. The file is unbuffered: each line goes to the
    OS in one ``write`` call, and a failed write leaves nothing half-buffered to retry or grow.
    A path that cannot be opened is retried on the next event, so the capture resumes by
    itself once the path is fixed.
    """

    def __init__(self, path: Path, *, label: str = "") -> None:
        self.path = path
        self.label = label or path.stem
        self.failures = 0
        self._kinds: set[tuple[str, int | None]] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._file: BinaryIO | None = None
        with self._lock:
            self._open()

    def _open(self) -> BinaryIO | None:
        """Under the lock: the open file, opening it first if needed; None if it cannot be."""
        if self._file is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("ab", buffering=0)
            except OSError as exc:
                self._failed("open", exc)
        return self._file

    def _failed(self, action: str, exc: OSError) -> None:
        self.failures += 1
        kind = (type(exc).__name__, exc.errno)
        if kind not in self._kinds:
            self._kinds.add(kind)
            log.warning("[capture] accountId=%s cannot %s %s: %s (events are still journaled;"
                        " further failures of this kind are only counted)",
                        self.label, action, self.path, exc)

    def write(self, raw: RawEvent) -> bool:
        """Append one line; False if it could not be written (counted and logged)."""
        line = memoryview((encode_capture_line(raw) + "\n").encode("utf-8"))
        with self._lock:
            if self._closed:
                return True
            file = self._open()
            if file is None:
                return False
            try:
                while line:
                    line = line[file.write(line) or 0:]
            except OSError as exc:
                self._failed("write", exc)
                return False
            return True

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._file is not None:
                self._file.close()
                self._file = None
