"""Threads and messages of an account, newest first by default, paged with an opaque cursor.

``GET /api/whatsapp/threads/{accountId}`` → ``{success, threads, count, nextBefore}``;
``GET /api/whatsapp/messages/{accountId}/{threadId}`` → ``{success, thread, messages, count,
nextBefore}``. ``limit`` is 1 to 500 (default 50). ``nextBefore`` is null on the last page;
otherwise pass it back as ``before`` for the next one.

Paging is keyset paging (``store.contract.PageKey``): each page starts strictly after the last
item of the previous one in the sort order, so messages arriving meanwhile never shift a page
— no gaps, no repeats. Newest-first message pages walk back in time (new messages are ahead of
the walk and do not appear); oldest-first pages walk forward and do pick up new messages at
the end. Threads are ordered by their newest message, which moves: a thread that receives a
message during a walk jumps ahead of the cursor and is not listed again (no repeats), and it
is on the first page of a fresh walk.

A thread is addressed by its id (``{accountId}__{jid}``) or by any of its JIDs, including a
LID that was merged into its phone-number thread (``aliasJids``).

Pages are reused while the store's marks say nothing they were read from changed
(``wadaemon.http.page_cache``); a page found through an alias is always read afresh (which
thread an alias names can change with any thread).
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from wadaemon.domain import MessageDoc, ThreadDoc, thread_id_for
from wadaemon.http.context import context_of
from wadaemon.http.errors import ApiError
from wadaemon.http.responses import encode_body, json_response
from wadaemon.http.routes.common import (
    BEFORE,
    decode_cursor,
    encode_cursor,
    require_account,
    store_call,
)
from wadaemon.http.routing import RouteTable, choice_param, int_param
from wadaemon.identity import normalise_jid
from wadaemon.store.contract import PageKey

routes = RouteTable("threads")

LIMIT = int_param("limit", minimum=1, maximum=500, default=50, description="Page size")
THREAD_ORDER = choice_param("orderBy", ["desc"], default="desc",
                            description="desc: newest lastMessageAt first (the only order served)")
MESSAGE_ORDER = choice_param("orderBy", ["desc", "asc"], default="desc",
                             description="By tsClientMs: desc newest first, asc oldest first")


class ThreadItem(ThreadDoc, kw_only=True):
    """A thread document with its id."""

    id: str


class ThreadsBody(msgspec.Struct, rename="camel"):
    threads: list[ThreadItem]
    count: int
    next_before: str | None
    success: bool = True


class MessagesBody(msgspec.Struct, rename="camel"):
    thread: ThreadItem
    messages: list[MessageDoc]
    count: int
    next_before: str | None
    success: bool = True


def thread_item(doc: ThreadDoc) -> ThreadItem:
    return ThreadItem(id=thread_id_for(doc.account_id, doc.client_jid), **msgspec.structs.asdict(doc))


@routes.get("/api/whatsapp/threads/{accountId}", level="api", response=ThreadsBody,
            query=(LIMIT, THREAD_ORDER, BEFORE), summary="Threads of an account, newest first")
async def list_threads(request: web.Request) -> web.Response:
    account_id = request.match_info["accountId"]
    limit = LIMIT.parse(request)
    THREAD_ORDER.parse(request)
    before = BEFORE.parse(request)
    after = decode_cursor(BEFORE, before)
    await require_account(request, account_id)
    context = context_of(request)
    key, marks = ("threads", account_id, limit, before), context.api_store.marks()
    if (kept := context.pages.get(key, marks)) is not None:
        return json_response(kept)
    # One more than asked tells whether a next page exists without a second query.
    docs = await store_call(request, lambda store: store.list_threads(account_id, limit=limit + 1, after=after))
    page = [thread_item(doc) for doc in docs[:limit]]
    next_before = (encode_cursor(PageKey(ms=page[-1].last_message_at_ms, id=page[-1].id))
                   if len(docs) > limit else None)
    body = encode_body(ThreadsBody(threads=page, count=len(page), next_before=next_before))
    context.pages.put(key, marks, body)
    return json_response(body)


@routes.get("/api/whatsapp/messages/{accountId}/{threadId}", level="api", response=MessagesBody,
            query=(LIMIT, MESSAGE_ORDER, BEFORE),
            summary="Messages of a thread (by thread id or any of its JIDs), newest first")
async def list_messages(request: web.Request) -> web.Response:
    account_id = request.match_info["accountId"]
    limit = LIMIT.parse(request)
    order = MESSAGE_ORDER.parse(request)
    before = BEFORE.parse(request)
    after = decode_cursor(BEFORE, before)
    await require_account(request, account_id)
    jid = normalise_jid(request.match_info["threadId"].removeprefix(f"{account_id}__"))
    context = context_of(request)
    named = thread_id_for(account_id, jid)
    key, marks = ("messages", named, limit, order, before), context.api_store.marks(named)
    if (kept := context.pages.get(key, marks)) is not None:
        return json_response(kept)
    thread = await store_call(request, lambda store: store.find_thread(account_id, jid))
    if thread is None:
        raise ApiError(404, "thread_not_found", f"no thread {jid} on account {account_id}")
    item = thread_item(thread)
    docs = await store_call(request, lambda store: store.list_messages(
        item.id, limit=limit + 1, order=order, after=after))
    page = docs[:limit]
    next_before = (encode_cursor(PageKey(ms=page[-1].ts_client_ms, id=page[-1].id))
                   if len(docs) > limit else None)
    body = encode_body(MessagesBody(thread=item, messages=page, count=len(page), next_before=next_before))
    if item.id == named:  # found by its own id, not through an alias
        context.pages.put(key, marks, body)
    return json_response(body)
