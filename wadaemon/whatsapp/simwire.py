"""The wire between the simulated WhatsApp service and its clients: length-prefixed frames.

Why length-prefixed msgpack frames over plain TCP, not a WebSocket:

* The client side is a ``Transport``, whose methods are blocking and which delivers from a
  thread of its own (``wadaemon.whatsapp.transport``). A plain socket read by a plain thread
  fits that exactly; a WebSocket client would bring an event loop into every account's
  transport for nothing.
* A 4-byte big-endian length before every frame makes the faults the service must survive
  precise and cheap to detect: a length beyond ``MAX_FRAME`` or a body that does not decode is
  *garbage* (the connection is closed with that reason), a stream that ends inside a frame is
  a *disconnect mid-frame*. Nothing is ever read or buffered beyond one frame.
* msgpack (msgspec) carries the protobuf bytes of a ``RawEvent`` as they are — no base64 as in
  the capture files' JSON — and decodes straight into the tagged Structs below, so a frame of
  the wrong shape is refused at decode, not deep in the service.

The conversation::

    client                                   service
    Hello(account, client)          ->
                                    <-       Welcome(accounts)          (or Bye(reason), closed)
                                    <-       Event(seq, RawEvent)       one at a time ...
    Ack(seq)                        ->       ... the next only after this ack
    Call(id, op, args)              ->                                  any time, any number
                                    <-       Reply(id, ok, result | error, kind)

``Ack`` is sent only once the client's sink returned, i.e. once the event is journaled: the
service counts an event *delivered* (ground truth, offline queue) only then, so an event in
flight when a connection dies is held and delivered again, never lost. Calls are
request/response with an id of the client's choosing, and ``op`` is an open set (``CALLS``): a
new kind of request (a group-info query, say) is one args Struct here, one handler in the
service and one method in the client. ``Hello(account="")`` only asks for the ``Welcome``, which
lists the service's accounts (``wadaemon run`` with no ``WADAEMON_ACCOUNTS`` runs them all).
"""

from __future__ import annotations

import struct
from typing import Any, TypeVar

import msgspec

from wadaemon.domain import GroupInfo
from wadaemon.whatsapp.transport import RawEvent

#: Upper bound of one frame's body: a history chunk of 500 messages is well under 1 MiB.
MAX_FRAME = 16 * 1024 * 1024
HEADER = struct.Struct(">I")
_T = TypeVar("_T")


class Hello(msgspec.Struct, tag="hello", frozen=True):
    account: str  # "" for a calls-only connection
    client: str  # who connects: the daemon's instance id (shown in the ground truth)


class Welcome(msgspec.Struct, tag="welcome", frozen=True):
    accounts: list[str]


class Bye(msgspec.Struct, tag="bye", frozen=True):
    reason: str


class Event(msgspec.Struct, tag="event", frozen=True):
    seq: int
    event: RawEvent


class Ack(msgspec.Struct, tag="ack", frozen=True):
    seq: int


class Call(msgspec.Struct, tag="call", frozen=True):
    id: int
    op: str
    args: dict[str, Any] = {}


class Reply(msgspec.Struct, tag="reply", frozen=True, kw_only=True):
    id: int
    ok: bool
    result: dict[str, Any] = {}
    error: str = ""
    #: why it failed: "transport" (TransportError), "unavailable" (HistoryRequestUnavailable),
    #: "bad_request" (unknown op, arguments of the wrong shape).
    kind: str = ""


Frame = Hello | Welcome | Bye | Event | Ack | Call | Reply


# Arguments and results of each call ----------------------------------------------------------


class SendTextArgs(msgspec.Struct, frozen=True):
    to: str
    text: str


class SendTextResult(msgspec.Struct, frozen=True):
    message_id: str
    ts_ms: int


class HistoryArgs(msgspec.Struct, frozen=True, kw_only=True):
    chat: str
    oldest_id: str
    oldest_from_me: bool
    oldest_ts_ms: int
    count: int


class ResolveLidArgs(msgspec.Struct, frozen=True):
    lid: str


class ResolveLidResult(msgspec.Struct, frozen=True):
    pn: str


class GroupInfoArgs(msgspec.Struct, frozen=True):
    group: str


class Empty(msgspec.Struct, frozen=True):
    pass


#: Every call: op -> (its arguments, its result).
CALLS: dict[str, tuple[type[msgspec.Struct], type[msgspec.Struct]]] = {
    "send_text": (SendTextArgs, SendTextResult),
    "request_history": (HistoryArgs, Empty),
    "resolve_lid": (ResolveLidArgs, ResolveLidResult),
    "group_info": (GroupInfoArgs, GroupInfo),
}


class FrameError(Exception):
    """The peer sent something that is not a frame of this protocol; the message says what."""


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Frame)


def encode(frame: Frame) -> bytes:
    body = _encoder.encode(frame)
    if len(body) > MAX_FRAME:
        raise FrameError(f"frame of {len(body)} bytes exceeds {MAX_FRAME}")
    return HEADER.pack(len(body)) + body


def body_length(header: bytes) -> int:
    """The body length a header announces; FrameError when it cannot be a frame."""
    (length,) = HEADER.unpack(header)
    if length == 0 or length > MAX_FRAME:
        raise FrameError(f"frame length {length} outside 1..{MAX_FRAME}")
    return int(length)


def decode(body: bytes) -> Frame:
    try:
        frame: Frame = _decoder.decode(body)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise FrameError(f"undecodable frame: {exc}") from None
    return frame


def to_args(args: msgspec.Struct) -> dict[str, Any]:
    built: dict[str, Any] = msgspec.to_builtins(args)
    return built


def from_dict(kind: type[_T], data: dict[str, Any]) -> _T:
    """Arguments or a result of the expected shape; FrameError (bad_request) otherwise."""
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as exc:
        raise FrameError(f"bad arguments: {exc}") from None
