"""Capture files: every raw event as one JSON line ``{"event": NAME, "data": BASE64}``.

The line holds exactly a ``RawEvent`` — the neonize class name and the protobuf bytes — so a
capture taken in production replays through the same journal and translator
(``wadaemon replay``). JSON Lines keeps captures greppable and appendable by a crashing process
(at worst the last line is torn, and a torn line is reported, not fatal).
"""

from __future__ import annotations

import base64
import binascii
import threading
from pathlib import Path

import msgspec

from wadaemon.whatsapp.transport import RawEvent


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
    """The RawEvent of one capture line; ValueError saying what is wrong with a bad one."""
    text = line.strip()
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
    than one; a lock keeps lines whole. Each line is flushed to the OS at once: the capture is a
    debugging record, the journal is what makes events durable.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, raw: RawEvent) -> None:
        line = encode_capture_line(raw) + "\n"
        with self._lock:
            if self._file.closed:
                return
            self._file.write(line)
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()
