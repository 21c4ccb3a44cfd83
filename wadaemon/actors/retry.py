"""Retrying store writes through an outage without losing the work in hand.

A ``StoreUnavailable`` (outage, timeout, contention) is retried with capped exponential backoff
for as long as it takes: the journal entry stays unsettled meanwhile, the channels fill, and the
journal's bound slows WhatsApp's intake. Any other error propagates, the pipeline restarts under
its supervisor, and the journal replays the entry.

Poison. A ``StoreError`` that is not ``StoreUnavailable`` caused by one entry's *content* would
come back on every replay and stall the account for good. Writers that batch several items call
``write_isolating``: on such an error it splits the batch in halves until the items the store
refuses are alone, lands everything else, and returns the refused items so the writer can set
their journal entries aside (``AccountContext.set_aside``: a dead letter, replayable later).
When *every* item of a batch of two or more is refused the cause is not the content but the
store (a bug, a broken database): the error propagates as before, so a store-wide failure
never turns the journal into dead letters. A batch of one cannot tell the two apart; it is set
aside, which loses nothing (the dead letter is replayable) and keeps the account moving.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import trio

from wadaemon.actors.context import AccountContext
from wadaemon.domain import AccountDoc
from wadaemon.store.contract import StoreError, StoreUnavailable

log = logging.getLogger("wadaemon.retry")

T = TypeVar("T")
Item = TypeVar("Item")

FIRST_DELAY_S = 0.2
MAX_DELAY_S = 15.0


async def _watched(ctx: AccountContext, attempt: Callable[[], Awaitable[T]]) -> T:
    """``attempt()``, with its start time on the status board while it runs: a call the store
    does not answer for a few seconds shows as unreachable in ``lastError``
    (``wadaemon.status.DaemonStatus.snapshot``) while it keeps waiting — an RPC deadline of
    30 s would otherwise keep an outage invisible that long."""
    token = object()
    waits = ctx.store_waits
    waits[token] = time.time_ns() // 1_000_000
    ctx.status.store_waiting_since_ms = min(waits.values())
    try:
        return await attempt()
    finally:
        del waits[token]
        ctx.status.store_waiting_since_ms = min(waits.values()) if waits else None


async def retry_store(ctx: AccountContext, tag: str, attempt: Callable[[], Awaitable[T]]) -> T:
    delay = FIRST_DELAY_S
    failures = 0
    while True:
        try:
            result = await _watched(ctx, attempt)
        except StoreUnavailable as exc:
            failures += 1
            ctx.status.last_error = f"{tag}: {exc}"
            if failures == 1 or failures % 10 == 0:
                log.warning("[%s] accountId=%s store unavailable (attempt %d, retrying in %.1fs): %s",
                            tag, ctx.account_id, failures, delay, exc)
            if tag == "realtime":
                ctx.status_writer.post(AccountDoc(last_realtime_error=str(exc)[:500]))
            await trio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY_S)
            continue
        if failures:
            log.info("[%s] accountId=%s store back after %d failed attempts", tag, ctx.account_id, failures)
            ctx.status.last_error = ""
        return result


async def write_isolating(
    ctx: AccountContext, tag: str, items: Sequence[Item], write: Callable[[Sequence[Item]], Awaitable[T]],
    *, _top: bool = True,
) -> tuple[list[T], list[tuple[Item, str]]]:
    """``write(items)`` through ``retry_store``; on a non-retryable ``StoreError``, bisect (module
    docstring). Returns the results of the calls that landed and the refused items with their
    error text."""
    results: list[T] = []
    refused: list[tuple[Item, str]] = []
    try:
        results.append(await retry_store(ctx, tag, lambda: write(items)))
    except StoreUnavailable:
        raise
    except StoreError as exc:
        if len(items) <= 1:
            refused.extend((item, f"{type(exc).__name__}: {exc}"[:500]) for item in items)
            ctx.status.last_error = f"{tag}: {exc}"[:500]
            return results, refused
        mid = len(items) // 2
        for half in (items[:mid], items[mid:]):
            landed, bad = await write_isolating(ctx, tag, half, write, _top=False)
            results.extend(landed)
            refused.extend(bad)
        if _top and not results:
            raise
    return results, refused
