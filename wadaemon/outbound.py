"""Outbound messages sent through the API: queued, sent through the transport, then settled.

The message is written ``queued`` under a local id *before* sending, so a crash or an outage
mid-send leaves a visible trace instead of nothing. WhatsApp chooses the message id only when it
acknowledges the send (neonize 0.5.2 exposes no way to choose it), so on success the queued
document is re-keyed to WhatsApp's id — one document per message, merged with any echo of it
that history or another device already stored. On failure it is marked ``failed``. A send is
never given up on while WhatsApp may still take it (``deliver``): a slow answer is waited for,
so a message is never recorded ``failed`` although it was sent.
"""

from __future__ import annotations

import logging
import time
import uuid

import msgspec
import trio

from wadaemon.actors.context import AccountContext
from wadaemon.domain import MessageDoc, MessageStatus, ms_to_datetime, thread_id_for
from wadaemon.identity import is_lid, is_pn, normalise_jid, phone_e164
from wadaemon.records import summarise
from wadaemon.whatsapp.transport import Transport

log = logging.getLogger("wadaemon.outbound")

class OutboundResult(msgspec.Struct, frozen=True):
    message_id: str
    status: MessageStatus
    thread_id: str
    error: str = ""


class InvalidRecipient(ValueError):
    """``to`` is neither a phone number nor a WhatsApp JID."""


def recipient_jid(to: str) -> str:
    """``+40 712-345 678`` / ``40712345678`` / a JID -> a normalised JID."""
    raw = to.strip()
    if "@" in raw:
        jid = normalise_jid(raw)
        if is_pn(jid) or is_lid(jid) or jid.endswith("@g.us"):
            return jid
        raise InvalidRecipient(f"unsupported JID {to!r}")
    digits = "".join(ch for ch in raw if ch.isdigit())
    if not 6 <= len(digits) <= 15 or raw.lstrip("+").replace(" ", "").replace("-", "") != digits:
        raise InvalidRecipient(f"{to!r} is not a phone number in international format")
    return f"{digits}@s.whatsapp.net"


class QueuedSend(msgspec.Struct, frozen=True, kw_only=True):
    """A message written ``queued`` under ``local_id``, not yet handed to WhatsApp."""

    local_id: str
    thread_id: str
    client_jid: str
    text: str
    queued_ms: int


async def queue_text(ctx: AccountContext, client_jid: str, text: str) -> QueuedSend:
    """Write the ``queued`` document for a text to ``client_jid`` (a normalised JID)."""
    client_jid = ctx.identity.canonical(client_jid)
    thread_id = thread_id_for(ctx.account_id, client_jid)
    local_id = f"local-{uuid.uuid4().hex}"
    now_ms = int(time.time() * 1000)
    store = ctx.runner.store
    queued = MessageDoc(
        id=local_id, wa_message_id="", account_id=ctx.account_id, client_jid=client_jid,
        thread_id=thread_id, direction="outbound", sender_jid=ctx.status.phone_jid or "",
        ts_client=ms_to_datetime(now_ms), ts_client_ms=now_ms, body=text, message_type="text",
        status="queued", sync_source="outbound",
    )
    await ctx.runner.write(ctx.account_id, store.upsert_messages, [queued])
    await ctx.runner.write(ctx.account_id, store.advance_threads, summarise([queued]))
    return QueuedSend(local_id=local_id, thread_id=thread_id, client_jid=client_jid, text=text,
                      queued_ms=now_ms)


async def deliver(ctx: AccountContext, transport: Transport, queued: QueuedSend) -> OutboundResult:
    """Hand the queued message to WhatsApp and settle it with *its* answer.

    There is deliberately no timeout here. neonize's send cannot be interrupted, and a send
    that is still running may well succeed: giving up after N seconds and writing ``failed``
    would record a wrong answer for a message WhatsApp delivered (messages this client sends
    are not echoed back, so nothing would ever correct it). So the worker thread's outcome is
    always waited for and written: ``sent`` under WhatsApp's id, or ``failed`` with the
    transport's error. A caller that cannot wait that long waits on the side (the API answers
    202 ``queued``) while this keeps going. Only cancellation (shutdown) abandons the thread;
    the document then stays ``queued`` — "not known", which is true — never ``failed``.
    """
    store = ctx.runner.store
    ctx.runner.check_fence(ctx.account_id)  # never send for an account whose lease may be gone
    try:
        sent = await trio.to_thread.run_sync(transport.send_text, queued.client_jid, queued.text,
                                             abandon_on_cancel=True)
    except trio.Cancelled:
        log.warning("[outbound] accountId=%s local=%s status=queued: stopping before WhatsApp "
                    "answered; left queued (outcome unknown)", ctx.account_id, queued.local_id)
        raise
    except Exception as exc:
        error = str(exc) or type(exc).__name__
        await ctx.runner.write(ctx.account_id, store.finish_outbound, queued.thread_id, queued.local_id,
                               wa_message_id="", status="failed", ts_ms=queued.queued_ms, error=error)
        log.warning("[outbound] accountId=%s to=%s local=%s status=failed error=%s",
                    ctx.account_id, queued.client_jid, queued.local_id, error)
        return OutboundResult(message_id=queued.local_id, status="failed", thread_id=queued.thread_id,
                              error=error)
    await ctx.runner.write(ctx.account_id, store.finish_outbound, queued.thread_id, queued.local_id,
                           wa_message_id=sent.message_id, status="sent", ts_ms=sent.ts_ms)
    await ctx.announce_committed({(queued.thread_id, sent.message_id)})
    log.info("[outbound] accountId=%s to=%s msg=%s status=sent phone=%s",
             ctx.account_id, queued.client_jid, sent.message_id, phone_e164(queued.client_jid) or "-")
    return OutboundResult(message_id=sent.message_id, status="sent", thread_id=queued.thread_id)


async def send_text(ctx: AccountContext, transport: Transport, to: str, text: str) -> OutboundResult:
    """Queue and deliver in one go (waits for WhatsApp's answer, however long it takes)."""
    return await deliver(ctx, transport, await queue_text(ctx, recipient_jid(to), text))
