"""``POST /api/whatsapp/send/{accountId}``: ``{to, text, clientMessageId?}`` →
``{success, messageId, status, threadId}``.

* **Idempotent by ``clientMessageId``**: a retry with the same id gets the same message back
  (its current status) and never sends twice, also after a restart — the daemon keeps the
  record on disk (``wadaemon.control``). The same id with a different ``to``/``text`` is
  refused (409 ``client_message_id_reused``).
* **Only the owner sends.** An account this instance does not run is refused with 409
  ``account_not_here`` naming the owner instance; forwarding was not chosen because the
  instance holding the socket is the only one that can tell whether WhatsApp took the
  message, and a forwarded request that times out would leave the caller with less, not more.
* **Not connected** is refused with 409 ``not_connected``; nothing is queued, so nothing is
  silently sent hours later, and a retry once connected sends it.
* **200** when the send settled (``sent`` under WhatsApp's id, or ``failed`` with
  ``error``); **202** with ``status: queued`` when WhatsApp has not answered within the wait:
  the send is still in progress and the message settles later (read it back, or retry the
  POST with the same ``clientMessageId``). It is never reported ``failed`` while WhatsApp
  may still have taken it.

Rate limited per credential (bucket ``send``).
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from aiohttp import web

from wadaemon.domain import MessageStatus
from wadaemon.http.errors import ApiError
from wadaemon.http.responses import json_response
from wadaemon.http.routes.common import control_for_owned
from wadaemon.http.routing import RouteTable, read_body

routes = RouteTable("send")

MAX_TEXT = 4096


class SendRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=False):
    to: Annotated[str, msgspec.Meta(min_length=1, max_length=64,
                                    description="Phone number in international format, or a JID")]
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT)]
    client_message_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None


class SendBody(msgspec.Struct, rename="camel"):
    message_id: str
    status: MessageStatus
    thread_id: str
    error: str | None = None
    success: bool = True


@routes.post("/api/whatsapp/send/{accountId}", level="api", body=SendRequest, response=SendBody,
             also={202: SendBody}, errors=(409,), rate_limit="send",
             summary="Send a text message (idempotent by clientMessageId)")
async def send_message(request: web.Request) -> web.Response:
    account_id = request.match_info["accountId"]
    body = await read_body(request, SendRequest)
    if not body.text.strip():
        raise ApiError(400, "bad_body", "text is empty - at `$.text`")
    control = await control_for_owned(request, account_id)
    outcome = await control.send_text(account_id, body.to, body.text, body.client_message_id)
    return json_response(
        SendBody(message_id=outcome.message_id, status=outcome.status, thread_id=outcome.thread_id,
                 error=outcome.error or None),
        status=202 if outcome.status == "queued" else 200)
