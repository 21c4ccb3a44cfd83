"""The group namer: writes group subjects onto their threads, asking WhatsApp when no event told.

A group first seen through a live message arrives with no subject (a live message names its
sender, not its group), and without one the inbox would hide the thread as a placeholder. The
dispatcher sends such a group here once (``NameBook.wants_subject``); this actor asks the
transport (``group_info``: a round trip to WhatsApp, so in a worker thread and bounded by
``LOOKUP_TIMEOUT_S``) and writes the subject as a name-only summary. Group-change events bring
a subject directly and only need the write.

Why an actor of its own: the realtime writer must never wait on WhatsApp. The subject is put in
the ``NameBook`` before it is written, so whichever lands first — the thread's first summary
(which reads the book) or this name-only write (which creates no thread) — the name is there.
The journal entry that caused the work settles only after it, so a crash asks again; a failed
lookup is logged and settled (the thread keeps its placeholder) and retried on a later message
after ``SUBJECT_RETRY_S``.
"""

from __future__ import annotations

import logging
from functools import partial

import trio

from wadaemon.actors.context import AccountContext
from wadaemon.actors.retry import write_isolating
from wadaemon.records import renamed

log = logging.getLogger("wadaemon.groups")

LOOKUP_TIMEOUT_S = 30.0


async def run_group_namer(ctx: AccountContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    task_status.started()
    async for work in ctx.groups_recv:
        subject = work.subject or await _ask(ctx, work.jid)
        if subject:
            ctx.names.learn_subject(work.jid, subject)
            summaries = renamed(ctx.account_id, {work.jid: subject}, is_group=True)
            # A name the store refuses is derived data (its thread is stored): logged, not held.
            _, refused = await write_isolating(ctx, "groups", summaries, partial(
                ctx.runner.write, ctx.account_id, ctx.runner.store.advance_threads))
            for _summary, error in refused:
                log.error("[groups] accountId=%s subject of %s refused by the store: %s",
                          ctx.account_id, work.jid, error)
        await ctx.ledger.settle([work.seq])


async def _ask(ctx: AccountContext, jid: str) -> str:
    """The group's subject from WhatsApp, "" when it cannot be had now. A lookup cut short by
    the timeout or a shutdown is abandoned: it only reads, and its entry stays unsettled."""
    try:
        with trio.fail_after(LOOKUP_TIMEOUT_S):
            info = await trio.to_thread.run_sync(ctx.group_info, jid, abandon_on_cancel=True)
    except Exception as exc:  # TransportError, a timeout, or a transport bug: never fatal here
        log.warning("[groups] accountId=%s group=%s subject unavailable: %s", ctx.account_id, jid, exc)
        return ""
    log.info("[groups] accountId=%s group=%s subject learned participants=%d",
             ctx.account_id, jid, len(info.participants))
    return info.subject
