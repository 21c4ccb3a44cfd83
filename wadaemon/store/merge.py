"""Per-document rules of the store contract, as pure functions over documents.

Both adapters read the current document, call one of these, and write what comes back (or
nothing when it returns None). Keeping the rules here — not in SQL and not in Firestore field
transforms — is what makes the two adapters behave identically, and lets the contract tests
pin the rules once. Every function returns None when the write would change nothing: that is
how replays cost zero writes.
"""

from __future__ import annotations

from datetime import datetime

from msgspec.structs import replace

from wadaemon.domain import (
    STATUS_RANK,
    MessageDoc,
    MessageMutation,
    MessageStatus,
    ReceiptKind,
    ReceiptUpdate,
    ThreadDoc,
    ThreadPatch,
    ThreadSummary,
    ms_to_datetime,
    thread_id_for,
)
from wadaemon.identity import phone_e164
from wadaemon.records import preview_of

PREVIEW_CHARS = 100


def merge_message(existing: MessageDoc | None, incoming: MessageDoc, now: datetime) -> MessageDoc | None:
    """First write stamps ``createdAt``/``tsServer``; later writes fill content the first one
    lacked and move ``status`` forward, never back. Identity, first-seen time and provenance
    (``syncSource``, ``syncedAt``, ``tsClient``) belong to the first write."""
    if existing is None:
        return replace(
            incoming,
            created_at=incoming.created_at or now,
            ts_server=incoming.ts_server or now,
            updated_at=now,
        )
    merged = replace(
        existing,
        sender_name=incoming.sender_name or existing.sender_name,
        body=existing.body or incoming.body,
        message_type=existing.message_type if existing.message_type != "other" else incoming.message_type,
        media_type=existing.media_type or incoming.media_type,
        media_url=existing.media_url or incoming.media_url,
        media_mimetype=existing.media_mimetype or incoming.media_mimetype,
        media_filename=existing.media_filename or incoming.media_filename,
        quoted_message_id=existing.quoted_message_id or incoming.quoted_message_id,
        status=_forward_status(existing.status, incoming.status),
        delivered_at=existing.delivered_at or incoming.delivered_at,
        read_at=existing.read_at or incoming.read_at,
    )
    if existing.deleted:
        merged = replace(merged, body=existing.body)
    return _changed(existing, merged, now)


def apply_receipt(existing: MessageDoc, receipt: ReceiptUpdate | ReceiptKind, ts_ms: int, now: datetime) -> MessageDoc | None:
    """Status only moves forward (queued < sent < delivered < read < played); ``deliveredAt``
    and ``readAt`` record the first time each was reached."""
    kind = receipt.kind if isinstance(receipt, ReceiptUpdate) else receipt
    at = ms_to_datetime(ts_ms)
    merged = replace(
        existing,
        status=_forward_status(existing.status, kind),
        delivered_at=existing.delivered_at or at,
        read_at=existing.read_at or (at if kind in ("read", "played") else None),
    )
    return _changed(existing, merged, now)


def apply_mutation(
    existing: MessageDoc, mutation: MessageMutation, now: datetime, *, keep_revoked_body: bool = False
) -> MessageDoc | None:
    """Edits keep the original ``body`` and record the latest edit; a revoke marks the message
    deleted (and drops its text unless configured otherwise); reactions map sender -> emoji,
    an empty emoji removing the sender's reaction."""
    at = ms_to_datetime(mutation.ts_ms)
    if mutation.kind == "edit":
        if existing.deleted or (existing.edited_at is not None and existing.edited_at >= at):
            return None
        merged = replace(existing, edited_at=at, edited_body=mutation.body)
    elif mutation.kind == "revoke":
        merged = replace(
            existing,
            deleted=True,
            deleted_at=existing.deleted_at or at,
            body=existing.body if keep_revoked_body else "",
            edited_body=existing.edited_body if keep_revoked_body else None,
        )
    else:
        reactions = dict(existing.reactions or {})
        if mutation.emoji:
            reactions[mutation.reactor_jid] = mutation.emoji
        else:
            reactions.pop(mutation.reactor_jid, None)
        merged = replace(existing, reactions=reactions or None)
    return _changed(existing, merged, now)


def settle_outbound(
    queued: MessageDoc,
    echo: MessageDoc | None,
    *,
    wa_message_id: str,
    status: MessageStatus,
    now: datetime,
) -> MessageDoc:
    """The document a queued outbound message becomes under WhatsApp's id: our queued copy
    (its createdAt, body, syncSource ``outbound``) merged with whatever echo of it is stored."""
    settled = replace(
        queued,
        id=wa_message_id,
        wa_message_id=wa_message_id,
        status=_forward_status(queued.status, status),
        updated_at=now,
    )
    if echo is None:
        return settled
    return replace(
        settled,
        status=_forward_status(settled.status, echo.status),
        delivered_at=echo.delivered_at,
        read_at=echo.read_at,
        reactions=echo.reactions,
        edited_at=echo.edited_at,
        edited_body=echo.edited_body,
    )


def rekey_message(doc: MessageDoc, account_id: str, client_jid: str) -> MessageDoc:
    """The same message filed under another thread (LID thread merged into its phone thread)."""
    return replace(doc, client_jid=client_jid, thread_id=thread_id_for(account_id, client_jid))


def placeholder_name(client_jid: str) -> str:
    """The name of a thread WhatsApp has told us neither a name nor a phone number for: a
    contact known only by LID with no push name, a group whose subject could not be fetched.

    The Flutter inbox hides a thread with no name and no phone as a placeholder, so such a
    conversation would be invisible; this name keeps it listed. It is honest (it says only what
    we know: a contact or a group, and the tail of its WhatsApp id), stable (a function of the
    JID alone, so it never flickers) and never looks like a phone number (the inbox would then
    treat it as one). Being a function of the JID, it is also recognisable: any real name
    replaces it, and it is dropped when its thread merges into a phone-number thread.
    """
    tail = client_jid.partition("@")[0][-4:]
    kind = "Group" if client_jid.endswith("@g.us") else "Contact"
    return f"{kind} \u2026{tail}"


def advance_thread(existing: ThreadDoc | None, summary: ThreadSummary, now: datetime) -> ThreadDoc | None:
    """Thread summaries only move forward in time: a late older message (history, backfill)
    never replaces a newer preview. Names and phone numbers fill in as they become known; a
    thread with neither carries ``placeholder_name``. The fields the inbox prefers are kept
    equal to their twins: ``lastMessageText`` = ``lastMessagePreview``, ``normalizedPhone`` =
    ``phoneE164``."""
    if existing is None and not summary.create:
        return None
    base = existing or ThreadDoc(account_id=summary.account_id, client_jid=summary.client_jid)
    placeholder = placeholder_name(base.client_jid)
    stored_name = "" if base.display_name == placeholder else base.display_name
    phone = base.phone_e164 or summary.phone_e164 or None
    merged = replace(
        base,
        display_name=summary.display_name or stored_name or ("" if phone or phone_e164(base.client_jid) else placeholder),
        is_group=base.is_group or summary.is_group,
        phone_e164=phone,
        normalized_phone=phone or base.normalized_phone,
    )
    if summary.last_message_ms is not None and (
        base.last_message_at_ms is None or summary.last_message_ms > base.last_message_at_ms
    ):
        merged = replace(
            merged,
            last_message_at=ms_to_datetime(summary.last_message_ms),
            last_message_at_ms=summary.last_message_ms,
            last_message_preview=summary.last_message_preview[:PREVIEW_CHARS],
            last_message_direction=summary.last_message_direction,
        )
    if merged.last_message_preview is not None:
        merged = replace(merged, last_message_text=merged.last_message_preview)
    if summary.last_inbound_ms is not None and (
        base.last_inbound_at_ms is None or summary.last_inbound_ms > base.last_inbound_at_ms
    ):
        merged = replace(
            merged,
            last_inbound_at=ms_to_datetime(summary.last_inbound_ms),
            last_inbound_at_ms=summary.last_inbound_ms,
        )
    if summary.backfilled_at_ms is not None:
        at = ms_to_datetime(summary.backfilled_at_ms)
        if base.last_backfill_at is None or at > base.last_backfill_at:
            merged = replace(merged, last_backfill_at=at)
    if existing is None:
        return replace(merged, updated_at=now)
    return None if merged == existing else replace(merged, updated_at=now)


def patch_thread(existing: ThreadDoc | None, patch: ThreadPatch, now: datetime) -> ThreadDoc | None:
    """``patch`` applied to a stored thread (None: absent, nothing to write). Marks replace
    what was there; ``newest`` replaces the summary even when it is older (that is repair)."""
    if existing is None:
        return None
    merged = existing
    if patch.last_backfill_ms is not None:
        merged = replace(merged, last_backfill_at=ms_to_datetime(patch.last_backfill_ms))
    if patch.backfill_exhausted_ms is not None:
        merged = replace(merged, backfill_exhausted_at=ms_to_datetime(patch.backfill_exhausted_ms))
    if patch.gap_checked_through_ms is not None:
        merged = replace(merged, gap_checked_through_ms=patch.gap_checked_through_ms)
    newest = patch.newest
    if newest is not None and existing.last_message_at_ms == patch.seen_last_ms:
        merged = replace(
            merged,
            last_message_at=ms_to_datetime(newest.ts_client_ms),
            last_message_at_ms=newest.ts_client_ms,
            last_message_preview=preview_of(newest)[:PREVIEW_CHARS],
            last_message_text=preview_of(newest)[:PREVIEW_CHARS],
            last_message_direction=newest.direction,
        )
    return None if merged == existing else replace(merged, updated_at=now)


def summary_of_thread(doc: ThreadDoc, into_jid: str) -> ThreadSummary:
    """A thread's own summary, to fold it into thread ``into_jid`` (LID -> phone-number merge):
    its name comes along, unless it is only its placeholder."""
    return ThreadSummary(
        account_id=doc.account_id,
        client_jid=into_jid,
        display_name="" if doc.display_name == placeholder_name(doc.client_jid) else doc.display_name,
        is_group=doc.is_group,
        last_message_ms=doc.last_message_at_ms,
        last_message_preview=doc.last_message_preview or "",
        last_message_direction=doc.last_message_direction,
        last_inbound_ms=doc.last_inbound_at_ms,
        phone_e164=doc.phone_e164 or "",
    )


def add_alias(doc: ThreadDoc, alias_jid: str, now: datetime) -> ThreadDoc | None:
    if alias_jid in doc.alias_jids or alias_jid == doc.client_jid:
        return None
    return replace(doc, alias_jids=[*doc.alias_jids, alias_jid], updated_at=now)


def _forward_status(current: MessageStatus, proposed: MessageStatus) -> MessageStatus:
    return proposed if STATUS_RANK[proposed] > STATUS_RANK[current] else current


def _changed(before: MessageDoc, after: MessageDoc, now: datetime) -> MessageDoc | None:
    return None if after == before else replace(after, updated_at=now)
