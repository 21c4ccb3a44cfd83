"""The dispatchers: journal entries in, resolved work out, in journal order.

They are the only actors that translate and resolve identity, so every writer downstream sees
canonical JIDs only. The live one also keeps the account's ``NameBook`` (names learned in
journal order) and sends the group-namer the groups whose subject is to be written or asked.
Events that need no write (connection changes, rejects) settle their entry at once.

Two cursors over one journal. History-sync chunks are large (thousands of messages, seconds
to write) and the history channel holds two; with one dispatcher in journal order, a live
message journaled behind a run of chunks waited for all of them (8 s without a live commit
during a 60k-message ingest was seen). So live entries and history chunks are dispatched by
two actors, each in journal order on its own cursor (``JournalReader(history=...)``), and live
traffic overtakes history. What that gives up: a LID mapping carried by a chunk may now be
learned after a live message of that person was filed under its LID — the identity rules
already handle that order (the LID thread is merged when the mapping arrives). The history
dispatcher starts once the live one has loaded the known LID threads, so no merge is missed.
"""

from __future__ import annotations

import logging
import time
from functools import partial

import trio

from wadaemon.actors.context import AccountContext
from wadaemon.actors.retry import retry_store
from wadaemon.actors.work import (
    AnswerWork,
    GroupWork,
    HistoryWork,
    MergeWork,
    MessageWork,
    UpdateWork,
)
from wadaemon.domain import (
    AccountDoc,
    ConnectionEvent,
    EditEvent,
    GroupChangeEvent,
    HistoryChunkEvent,
    LidMapping,
    MessageEvent,
    MessageMutation,
    OfflineSyncEvent,
    PairingEvent,
    ReactionEvent,
    ReceiptEvent,
    ReceiptUpdate,
    RejectedEvent,
    RevokeEvent,
    WhatsAppEvent,
    thread_id_for,
)
from wadaemon.journal import HistoryTotals, JournalReader
from wadaemon.records import message_doc
from wadaemon.status import HistoryProgress
from wadaemon.whatsapp.translate import translate

log = logging.getLogger("wadaemon.dispatch")

BATCH_ENTRIES = 500


#: LID threads looked up at start, so a mapping learned after a restart still merges them.
KNOWN_THREADS_SCAN = 5000


async def run_dispatcher(ctx: AccountContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Live entries (everything but history-sync chunks), in journal order."""
    task_status.started()
    threads = await retry_store(ctx, "identity", partial(
        ctx.runner.read, ctx.runner.store.list_threads, ctx.account_id, limit=KNOWN_THREADS_SCAN))
    for thread in threads:
        ctx.identity.note_thread(thread.client_jid)
        # A thread's merged LIDs name its person: remembered, so a message still addressed by
        # such a LID lands in the merged thread even when the session's LID store lost the pair.
        ctx.identity.learn(LidMapping(lid=alias, pn=thread.client_jid) for alias in thread.alias_jids)
        if thread.is_group:  # a subject already stored is not asked again
            ctx.names.learn_subject(thread.client_jid, thread.display_name)
    ctx.identity_ready.set()
    await _dispatch(ctx, ctx.reader)


async def run_history_dispatcher(ctx: AccountContext, *,
                                 task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """History-sync chunks, in journal order, on their own cursor: a live message journaled
    behind a run of large chunks no longer waits for them to be written (module docstring)."""
    task_status.started()
    await ctx.identity_ready.wait()
    await _dispatch(ctx, ctx.history_reader)


async def _dispatch(ctx: AccountContext, reader: JournalReader) -> None:
    while True:
        entries = await reader.next_batch(BATCH_ENTRIES)
        for entry in entries:
            events = translate(ctx.account_id, entry.raw)
            work = [item for event in events for item in _resolve(ctx, entry.seq, entry.received_ms, event)]
            if ctx.pairing_reset:
                ctx.pairing_reset = False
                await ctx.reader.set_history_totals(HistoryTotals())
            ctx.ledger.expect(entry.seq, len(work))
            if not work:
                await ctx.ledger.settle([entry.seq])
            for item in work:
                if isinstance(item, HistoryWork | AnswerWork):
                    await ctx.history_send.send(item)
                elif isinstance(item, MessageWork | MergeWork):
                    await ctx.realtime_send.send(item)
                elif isinstance(item, GroupWork):
                    await ctx.groups_send.send(item)
                else:
                    await ctx.updates_send.send(item)
        ctx.status.journal_backlog = reader.backlog()
        ctx.status.journal_oldest_pending_ms = reader.oldest_pending_ms()


Work = HistoryWork | AnswerWork | MessageWork | MergeWork | UpdateWork | GroupWork


def _resolve(ctx: AccountContext, seq: int, received_ms: int, event: WhatsAppEvent) -> list[Work]:
    identity = ctx.identity
    if isinstance(event, MessageEvent):
        merges = identity.learn_address(event.chat) + identity.learn_address(event.sender)
        client_jid = identity.canonical(event.chat.jid)
        if client_jid == "status@broadcast":
            return []
        doc = message_doc(event, client_jid=client_jid, sender_jid=identity.canonical(event.sender.jid), synced_ms=None)
        identity.note_thread(client_jid)
        if doc.direction == "inbound" and doc.sender_jid == client_jid:
            ctx.names.learn_pushname(client_jid, doc.sender_name)
        return [*(MergeWork(seq, m) for m in merges), MessageWork(seq, doc), *_ask_subject(ctx, seq, client_jid)]
    if isinstance(event, GroupChangeEvent):
        ctx.names.learn_subject(event.jid, event.subject)
        return [GroupWork(seq, event.jid, event.subject)] if event.subject else []
    if isinstance(event, HistoryChunkEvent):
        return _resolve_history(ctx, seq, event)
    if isinstance(event, ReceiptEvent):
        thread_id = thread_id_for(ctx.account_id, identity.canonical_chat(event.chat))
        receipts = [ReceiptUpdate(thread_id, mid, event.kind, event.ts_ms) for mid in event.message_ids]
        return [UpdateWork(seq, receipts=receipts, received_ms=received_ms)]
    if isinstance(event, EditEvent | RevokeEvent | ReactionEvent):
        thread_id = thread_id_for(ctx.account_id, identity.canonical_chat(event.chat))
        return [UpdateWork(seq, mutations=[_mutation(thread_id, event)], received_ms=received_ms)]
    if isinstance(event, ConnectionEvent):
        ctx.status.state = event.state
        if event.phone_jid:
            ctx.status.phone_jid = event.phone_jid
        ctx.status_writer.post(AccountDoc(state=event.state, phone_jid=event.phone_jid or None))
        if ctx.on_connection is not None:
            ctx.on_connection(event.state, received_ms)
        log.info("[connection] accountId=%s state=%s reason=%s", ctx.account_id, event.state, event.reason)
    elif isinstance(event, OfflineSyncEvent):
        log.info("[connection] accountId=%s offlineSync completed=%s messages=%d",
                 ctx.account_id, event.completed, event.messages)
    elif isinstance(event, PairingEvent):
        if event.paired_jid:  # a new pairing: its history totals start from zero
            ctx.status.phone_jid = event.paired_jid
            ctx.status.history = HistoryProgress(saved_by_this_run=ctx.status.history.saved_by_this_run)
            ctx.pairing_reset = True
            ctx.status_writer.post(AccountDoc(phone_jid=event.paired_jid))
        if event.error:
            log.warning("[pairing] accountId=%s error=%s", ctx.account_id, event.error)
    elif isinstance(event, RejectedEvent):
        ctx.status.rejected += 1
        log.warning("[ingest] accountId=%s rejected event=%s seq=%d reason=%s",
                    ctx.account_id, event.event_name, seq, event.reason)
    return []


def _ask_subject(ctx: AccountContext, seq: int, client_jid: str) -> list[GroupWork]:
    """Ask WhatsApp for the subject of a group no event named (yet): ``NameBook.wants_subject``."""
    return [GroupWork(seq, client_jid)] if ctx.names.wants_subject(client_jid, trio.current_time()) else []


def _resolve_history(ctx: AccountContext, seq: int, event: HistoryChunkEvent) -> list[Work]:
    """Pairing history and on-demand answers resolve alike; they leave as different work
    because they are written by different steps (``actors.history``)."""
    identity = ctx.identity
    merges = identity.learn(event.lid_mappings)
    docs = []
    names: dict[str, str] = {}
    groups: set[str] = set()
    asks: list[GroupWork] = []
    skipped = 0
    synced_ms = int(time.time() * 1000)
    threads: list[str] = []
    ended: set[str] = set()
    for conversation in event.conversations:
        merges += identity.learn_address(conversation.chat)
        client_jid = identity.canonical(conversation.chat.jid)
        if client_jid == "status@broadcast":
            skipped += len(conversation.messages)
            continue
        identity.note_thread(client_jid)
        thread_id = thread_id_for(ctx.account_id, client_jid)
        threads.append(thread_id)
        if conversation.end_of_history:
            ended.add(thread_id)
        if conversation.is_group:
            groups.add(client_jid)
            ctx.names.learn_subject(client_jid, conversation.name)
        else:
            ctx.names.learn_contact(client_jid, conversation.name)
        if name := ctx.names.name_of(client_jid):
            names[client_jid] = name
        elif conversation.is_group and conversation.messages:
            asks += _ask_subject(ctx, seq, client_jid)
        for message in conversation.messages:
            merges += identity.learn_address(message.sender)
            docs.append(message_doc(message, client_jid=client_jid,
                                    sender_jid=identity.canonical(message.sender.jid), synced_ms=synced_ms))
    renames: dict[str, str] = {}
    for jid, pushname in event.pushnames:
        canonical = identity.canonical(jid)
        ctx.names.learn_pushname(canonical, pushname)
        if identity.is_lid_thread(canonical) and canonical not in names:
            renames[canonical] = ctx.names.name_of(canonical)  # a LID thread shown by placeholder so far
    if event.sync_type == "ON_DEMAND":
        answer = AnswerWork(seq=seq, docs=docs, threads=threads, ended=ended, names=names, groups=groups)
        return [*(MergeWork(seq, m) for m in merges), answer, *asks]
    history = HistoryWork(seq, event.sync_type, event.chunk_order, event.progress, docs, names, groups, skipped,
                          renames)
    return [*(MergeWork(seq, m) for m in merges), history, *asks]


def _mutation(thread_id: str, event: EditEvent | RevokeEvent | ReactionEvent) -> MessageMutation:
    if isinstance(event, EditEvent):
        return MessageMutation(thread_id=thread_id, message_id=event.target_id, kind="edit",
                               ts_ms=event.ts_ms, body=event.new_body)
    if isinstance(event, RevokeEvent):
        return MessageMutation(thread_id=thread_id, message_id=event.target_id, kind="revoke", ts_ms=event.ts_ms)
    return MessageMutation(thread_id=thread_id, message_id=event.target_id, kind="reaction",
                           ts_ms=event.ts_ms, reactor_jid=event.sender_jid, emoji=event.emoji)
