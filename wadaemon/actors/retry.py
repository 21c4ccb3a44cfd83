"""Retrying store writes through an outage without losing the work in hand.

A ``StoreUnavailable`` (outage, timeout, contention) is retried with capped exponential backoff
for as long as it takes: the journal entry stays unsettled meanwhile, the channels fill, and the
journal's bound slows WhatsApp's intake. Any other error propagates, the pipeline restarts under
its supervisor, and the journal replays the entry.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

from wadaemon.actors.context import AccountContext
from wadaemon.domain import AccountDoc
from wadaemon.store.contract import StoreUnavailable

log = logging.getLogger("wadaemon.retry")

T = TypeVar("T")

FIRST_DELAY_S = 0.2
MAX_DELAY_S = 15.0


async def retry_store(ctx: AccountContext, tag: str, attempt: Callable[[], Awaitable[T]]) -> T:
    delay = FIRST_DELAY_S
    failures = 0
    while True:
        try:
            result = await attempt()
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
