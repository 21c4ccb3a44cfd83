"""The embedded SQLite adapter of the store contract (``wadaemon.store.contract``).

It mirrors the Firestore layout of docs/data-model.md so that the two backends are interchangeable and a
reader of the file sees exactly the Firestore field names::

    threads(id, account_id, last_message_at_ms, doc)        threads/{threadId}
    messages(thread_id, id, ts_client_ms, doc)               threads/{threadId}/messages/{id}
    accounts(id, doc)                                        accounts/{accountId}
    leases(collection, id, doc)                              whatsapp_account_leases/{accountId},
                                                             whatsapp_backfill_locks/{accountId},
                                                             whatsapp_instances/{instanceId}

``doc`` is the JSON of ``document_fields`` (camelCase names, absent fields left out, datetimes
as RFC 3339 strings); the other columns are copies of document fields that queries order or
filter on. Ids are the *escaped* document ids (``escape_doc_id``), as in Firestore.

How writes work: a call takes the write lock (``BEGIN IMMEDIATE``), reads the documents it
touches (one ``SELECT`` per chunk of ids), applies the pure rules of ``wadaemon.store.merge``
and writes only the documents that changed. Like the Firestore adapter it commits every 500
writes, so ``UpsertResult.commits`` means the same on both backends; a crash between two commits
leaves the earlier ones, which a replay completes (writes are idempotent). ``finish_outbound``
and ``merge_threads`` run in a single transaction each, so a re-key or a move is all or nothing.

Leases are compare-and-swap because the read and the write share one ``BEGIN IMMEDIATE``
transaction, which also holds across processes sharing the file.

Threads: one connection (``check_same_thread=False``) guarded by a lock; ``StoreRunner``'s worker
threads and the HTTP thread may call concurrently. Writes are serialised by SQLite anyway.

``local_reader()``: a second connection, for reads only (``query_only``), that never waits
(busy timeout 0). In WAL mode a reader does not wait for writers: it reads the last committed
state from local pages, in tens of microseconds. The HTTP API calls it on its own loop, which
spares the hop to a worker thread (under load, handing the GIL back and forth between threads
costs more than the read itself); a read that would have to wait raises ``StoreUnavailable``
at once and the caller goes the usual way (``wadaemon.http.store_access``). Its ``marks``
tell the API whether a page it keeps is still current (``wadaemon.http.page_cache``): every
write goes through ``_Writer``, which notes the threads each commit changed.

Failures: busy/locked, I/O, full-disk and cannot-open errors become ``StoreUnavailable``;
everything else (including a document that does not decode) ``StoreError``.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from msgspec.structs import replace

from wadaemon.domain import (
    AccountDoc,
    Doc,
    InstanceDoc,
    Lease,
    MessageDoc,
    MessageMutation,
    MessageStatus,
    ReceiptUpdate,
    ThreadDoc,
    ThreadPatch,
    ThreadSummary,
    thread_id_for,
)
from wadaemon.store import leases, merge
from wadaemon.store.contract import (
    LeaseKind,
    MessageOrder,
    PageKey,
    StoreError,
    StoreUnavailable,
    UpsertResult,
)
from wadaemon.store.encoding import (
    document_fields,
    document_from_fields,
    escape_doc_id,
    store_now,
    unescape_doc_id,
)
from wadaemon.store.leases import LeaseDecision

log = logging.getLogger("wadaemon.store.sqlite")

D = TypeVar("D", bound=Doc)
T = TypeVar("T")


#: Writes per commit, as Firestore's batch limit (keeps ``commits`` comparable across backends).
MAX_BATCH_WRITES = 500
#: Ids per ``SELECT`` (a message key is two parameters; well below SQLite's variable limit).
READ_CHUNK = 400
#: How long a write waits for another process's write lock before "database is locked".
BUSY_TIMEOUT_S = 10.0
#: How long ``ping`` waits for the connection before answering "down".
PING_TIMEOUT_S = 3.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS threads (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    last_message_at_ms INTEGER,
    doc TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS threads_by_account_recent
    ON threads (account_id, last_message_at_ms DESC);
CREATE TABLE IF NOT EXISTS messages (
    thread_id TEXT NOT NULL,
    id TEXT NOT NULL,
    ts_client_ms INTEGER NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (thread_id, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_by_time ON messages (thread_id, ts_client_ms);
CREATE TABLE IF NOT EXISTS accounts (
    id TEXT PRIMARY KEY,
    doc TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (collection, id)
) WITHOUT ROWID;
"""


#: SQLite primary result codes that mean "try again later", not "bug".
_UNAVAILABLE_CODES = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
    }
)
_UNAVAILABLE_TEXT = ("locked", "busy", "disk i/o", "unable to open", "disk is full")

MessageKey = tuple[str, str]


def _unavailable(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return (code & 0xFF) in _UNAVAILABLE_CODES
    text = str(exc).lower()
    return any(marker in text for marker in _UNAVAILABLE_TEXT)


def _encode(fields: dict[str, Any]) -> str:
    return msgspec.json.encode(fields).decode("utf-8")


def _fields(raw: str | None) -> dict[str, Any]:
    if raw is None:
        return {}
    fields = msgspec.json.decode(raw)
    if not isinstance(fields, dict):
        raise StoreError(f"stored document is not a JSON object: {raw[:80]!r}")
    return fields


def _decode(raw: str, doc_type: type[D]) -> D:
    """A stored document, decoded straight from its JSON (unknown fields ignored, as
    ``document_from_fields`` does: twice as fast as a dict first, on the read paths of the API)."""
    try:
        return msgspec.json.decode(raw, type=doc_type, strict=False)
    except msgspec.ValidationError as exc:
        raise StoreError(f"stored {doc_type.__name__} does not decode: {exc}") from exc


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class _Changes:
    """Counters of this store's own commits, for ``LocalReader.marks``: one for every thread
    document (any account: the thread lists), one per thread for its document and messages.
    Bumped only *after* a commit, so a mark read before a page can be older than the page but
    never newer (a reuse can only be refused too often, never wrongly allowed)."""

    def __init__(self) -> None:
        self.threads = 0
        self.per_thread: dict[str, int] = {}

    def committed(self, touched: set[str], thread_docs: bool) -> None:
        """``touched``: the threads whose document or messages the commit wrote;
        ``thread_docs``: whether it wrote any thread document."""
        if thread_docs:
            self.threads += 1
        for thread_id in touched:
            self.per_thread[thread_id] = self.per_thread.get(thread_id, 0) + 1


class _Writer:
    """The writes of one store call. With ``max_writes`` set it commits every ``max_writes``
    writes and opens the next transaction (Firestore's batch limit); ``commits`` counts the
    commits that carried writes. Every write of the adapter goes through here, which is what
    lets it note, per commit, which threads changed (``_Changes``)."""

    def __init__(self, conn: sqlite3.Connection, max_writes: int | None, changes: _Changes) -> None:
        self._conn = conn
        self._max = max_writes
        self._changes = changes
        self._touched: set[str] = set()
        self._thread_docs = False
        self._pending = 0
        self.writes = 0
        self.commits = 0

    def execute(self, sql: str, params: Sequence[Any]) -> None:
        self._conn.execute(sql, params)
        self.writes += 1
        self._pending += 1
        if self._max is not None and self._pending >= self._max:
            self.commit()
            self._conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self._conn.execute("COMMIT")
        if self._pending:
            self.commits += 1
        self._pending = 0
        self._changes.committed(self._touched, self._thread_docs)
        self._touched, self._thread_docs = set(), False

    # -- document writes -----------------------------------------------------------------------
    def put_message(self, doc: MessageDoc) -> None:
        self._touched.add(doc.thread_id)
        self.execute(
            "INSERT INTO messages (thread_id, id, ts_client_ms, doc) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (thread_id, id) DO UPDATE SET ts_client_ms = excluded.ts_client_ms, doc = excluded.doc",
            (escape_doc_id(doc.thread_id), escape_doc_id(doc.id), doc.ts_client_ms, _encode(document_fields(doc))),
        )

    def delete_message(self, thread_id: str, message_id: str) -> None:
        self._touched.add(thread_id)
        self.execute(
            "DELETE FROM messages WHERE thread_id = ? AND id = ?",
            (escape_doc_id(thread_id), escape_doc_id(message_id)),
        )

    def put_thread(self, doc: ThreadDoc) -> None:
        self._touched.add(thread_id_for(doc.account_id, doc.client_jid))
        self._thread_docs = True
        self.execute(
            "INSERT INTO threads (id, account_id, last_message_at_ms, doc) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET account_id = excluded.account_id, "
            "last_message_at_ms = excluded.last_message_at_ms, doc = excluded.doc",
            (
                escape_doc_id(thread_id_for(doc.account_id, doc.client_jid)),
                doc.account_id,
                doc.last_message_at_ms,
                _encode(document_fields(doc)),
            ),
        )

    def delete_thread(self, thread_id: str) -> None:
        self._touched.add(thread_id)
        self._thread_docs = True
        self.execute("DELETE FROM threads WHERE id = ?", (escape_doc_id(thread_id),))

    def put_account_fields(self, account_id: str, fields: dict[str, Any]) -> None:
        self.execute(
            "INSERT INTO accounts (id, doc) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET doc = excluded.doc",
            (escape_doc_id(account_id), _encode(fields)),
        )

    def put_lock(self, collection: str, key: str, fields: dict[str, Any]) -> None:
        self.execute(
            "INSERT INTO leases (collection, id, doc) VALUES (?, ?, ?) "
            "ON CONFLICT (collection, id) DO UPDATE SET doc = excluded.doc",
            (collection, escape_doc_id(key), _encode(fields)),
        )

    def delete_lock(self, collection: str, key: str) -> None:
        self.execute("DELETE FROM leases WHERE collection = ? AND id = ?", (collection, escape_doc_id(key)))


class SqliteStore:
    """``Store`` on an embedded SQLite file (WAL, ``synchronous=NORMAL``)."""

    backend = "sqlite"

    def __init__(
        self,
        path: Path | str,
        *,
        keep_revoked_body: bool = False,
        busy_timeout: float = BUSY_TIMEOUT_S,
        _reader: bool = False,
    ) -> None:
        self.path = path
        self.keep_revoked_body = keep_revoked_body
        self._lock = threading.Lock()
        self._closed = False
        self._changes = _Changes()
        self._reader: LocalReader | None = None
        with self._errors("open"):
            # isolation_level=None: no implicit transactions; every write call opens its own
            # BEGIN IMMEDIATE (the write lock up front, so read-modify-write cannot deadlock).
            self._conn = sqlite3.connect(
                str(path), timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            try:
                if _reader:
                    self._conn.execute("PRAGMA query_only=ON")
                else:
                    self._conn.execute("PRAGMA journal_mode=WAL")
                    self._conn.execute("PRAGMA synchronous=NORMAL")
                    self._conn.executescript(f"BEGIN IMMEDIATE;\n{SCHEMA}\nCOMMIT;")
            except BaseException:
                self._conn.close()
                raise

    def local_reader(self) -> LocalReader:
        """A view of this file for reads that never wait (see the module docstring); opened on
        first use, closed with this store. Its writes fail (``query_only``)."""
        with self._lock:
            if self._reader is None:
                self._reader = LocalReader(self)
            return self._reader

    def _marks(self, thread_id: str | None) -> tuple[int, ...] | None:
        """See ``LocalReader.marks``."""
        if not self._lock.acquire(blocking=False):
            return None  # a write is under way: nothing can be said at once
        try:
            if self._closed:
                return None
            # Changes only when *another* connection (another process) committed.
            foreign = int(self._conn.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error:
            return None
        finally:
            self._lock.release()
        changes = self._changes
        if thread_id is None:
            return (foreign, changes.threads)
        return (foreign, changes.per_thread.get(thread_id, 0))

    # -- plumbing --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except StoreError:
            raise
        except sqlite3.Error as exc:
            kind = StoreUnavailable if _unavailable(exc) else StoreError
            raise kind(f"sqlite {what}: {type(exc).__name__}: {exc}") from exc
        except msgspec.MsgspecError as exc:
            raise StoreError(f"sqlite {what}: stored document does not decode: {exc}") from exc

    def _open_conn(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError("sqlite store is closed")
        return self._conn

    @contextlib.contextmanager
    def _read(self, what: str) -> Iterator[sqlite3.Connection]:
        """The connection, for reads (autocommit: each statement sees committed data)."""
        with self._lock, self._errors(what):
            yield self._open_conn()

    @contextlib.contextmanager
    def _transaction(
        self, what: str, *, max_writes: int | None = MAX_BATCH_WRITES
    ) -> Iterator[tuple[sqlite3.Connection, _Writer]]:
        """A write call: ``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any failure."""
        with self._lock, self._errors(what):
            conn = self._open_conn()
            conn.execute("BEGIN IMMEDIATE")
            writer = _Writer(conn, max_writes, self._changes)
            try:
                yield conn, writer
                writer.commit()
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise

    # -- reads inside a call ---------------------------------------------------------------------
    @staticmethod
    def _load_messages(conn: sqlite3.Connection, keys: Iterable[MessageKey]) -> dict[MessageKey, MessageDoc | None]:
        """The stored messages for ``(threadId, messageId)`` keys (None where absent): one
        ``SELECT`` per chunk, joining a ``VALUES`` list so the primary key is searched."""
        escaped = {(escape_doc_id(t), escape_doc_id(i)): (t, i) for t, i in dict.fromkeys(keys)}
        found: dict[MessageKey, MessageDoc | None] = dict.fromkeys(escaped.values())
        for chunk in _chunks(list(escaped), READ_CHUNK):
            values = ", ".join(["(?, ?)"] * len(chunk))
            params = [part for key in chunk for part in key]
            rows = conn.execute(
                f"WITH k (t, i) AS (VALUES {values}) "
                "SELECT m.thread_id, m.id, m.doc FROM k JOIN messages AS m ON m.thread_id = k.t AND m.id = k.i",
                params,
            )
            for thread_id, message_id, raw in rows:
                found[escaped[(thread_id, message_id)]] = _decode(raw, MessageDoc)
        return found

    @staticmethod
    def _load_threads(conn: sqlite3.Connection, thread_ids: Iterable[str]) -> dict[str, ThreadDoc | None]:
        escaped = {escape_doc_id(tid): tid for tid in dict.fromkeys(thread_ids)}
        found: dict[str, ThreadDoc | None] = dict.fromkeys(escaped.values())
        for chunk in _chunks(list(escaped), READ_CHUNK):
            marks = ", ".join(["?"] * len(chunk))
            for key, raw in conn.execute(f"SELECT id, doc FROM threads WHERE id IN ({marks})", list(chunk)):
                found[escaped[key]] = _decode(raw, ThreadDoc)
        return found

    @staticmethod
    def _account_fields(conn: sqlite3.Connection, account_id: str) -> dict[str, Any] | None:
        row = conn.execute("SELECT doc FROM accounts WHERE id = ?", (escape_doc_id(account_id),)).fetchone()
        return None if row is None else _fields(row[0])

    # -- messages --------------------------------------------------------------------------------
    def upsert_messages(self, docs: Sequence[MessageDoc]) -> UpsertResult:
        if not docs:
            return UpsertResult(written=0, unchanged=0, commits=0)
        with self._transaction("upsert_messages") as (conn, writer):
            before = self._load_messages(conn, ((d.thread_id, d.id) for d in docs))
            state = dict(before)
            now = store_now()
            unchanged = 0
            for doc in docs:
                key = (doc.thread_id, doc.id)
                merged = merge.merge_message(state[key], doc, now)
                if merged is None:
                    unchanged += 1
                else:
                    state[key] = merged
            written = 0
            for key, after in state.items():
                if after is not None and after is not before[key]:
                    writer.put_message(after)
                    written += 1
        return UpsertResult(written=written, unchanged=unchanged, commits=writer.commits)

    def _apply_to_messages(
        self,
        what: str,
        items: Sequence[T],
        address: Callable[[T], MessageKey],
        apply: Callable[[MessageDoc, T, datetime], MessageDoc | None],
    ) -> list[T]:
        """Read the addressed messages, apply each item in order, write what changed; the items
        whose message is not stored are returned (the caller keeps them for later)."""
        if not items:
            return []
        missing: list[T] = []
        with self._transaction(what) as (conn, writer):
            before = self._load_messages(conn, (address(item) for item in items))
            state = dict(before)
            now = store_now()
            for item in items:
                key = address(item)
                current = state[key]
                if current is None:
                    missing.append(item)
                    continue
                changed = apply(current, item, now)
                if changed is not None:
                    state[key] = changed
            for key, after in state.items():
                if after is not None and after is not before[key]:
                    writer.put_message(after)
        return missing

    def apply_receipts(self, receipts: Sequence[ReceiptUpdate]) -> list[ReceiptUpdate]:
        return self._apply_to_messages(
            "apply_receipts",
            receipts,
            lambda r: (r.thread_id, r.message_id),
            lambda doc, r, now: merge.apply_receipt(doc, r, r.ts_ms, now),
        )

    def apply_mutations(self, mutations: Sequence[MessageMutation]) -> list[MessageMutation]:
        return self._apply_to_messages(
            "apply_mutations",
            mutations,
            lambda m: (m.thread_id, m.message_id),
            lambda doc, m, now: merge.apply_mutation(doc, m, now, keep_revoked_body=self.keep_revoked_body),
        )

    def finish_outbound(
        self,
        thread_id: str,
        local_id: str,
        *,
        wa_message_id: str,
        status: MessageStatus,
        ts_ms: int,
        error: str = "",
    ) -> None:
        """One transaction: the re-keyed document appears and the local one disappears together.
        A retry after a success finds no local document and only moves the status forward.
        ``error`` has no field in docs/data-model.md; the caller logs it."""
        with self._transaction("finish_outbound", max_writes=None) as (conn, writer):
            now = store_now()
            local_key = (thread_id, local_id)
            if not wa_message_id:
                queued = self._load_messages(conn, [local_key])[local_key]
                # Only a message still queued can have failed; one already sent stays sent.
                if queued is not None and queued.status == "queued":
                    writer.put_message(replace(queued, status="failed", updated_at=now))
                return
            wa_key = (thread_id, wa_message_id)
            stored = self._load_messages(conn, [local_key, wa_key])
            queued, echo = stored[local_key], stored[wa_key]
            if local_key == wa_key:
                echo = None
            if queued is None:
                if echo is not None:
                    moved = merge.merge_message(echo, replace(echo, status=status), now)
                    if moved is not None:
                        writer.put_message(moved)
                return
            writer.put_message(
                merge.settle_outbound(queued, echo, wa_message_id=wa_message_id, status=status, now=now)
            )
            if local_key != wa_key:
                writer.delete_message(thread_id, local_id)

    def get_message(self, thread_id: str, message_id: str) -> MessageDoc | None:
        with self._read("get_message") as conn:
            key = (thread_id, message_id)
            return self._load_messages(conn, [key])[key]

    def list_messages(self, thread_id: str, *, limit: int, order: MessageOrder = "desc",
                      after: PageKey | None = None) -> list[MessageDoc]:
        """Ordered by ``tsClientMs``, ties by document id (Firestore's implicit order)."""
        if limit <= 0:
            return []
        direction, beyond = ("DESC", "<") if order == "desc" else ("ASC", ">")
        where = "thread_id = ?"
        args: list[Any] = [escape_doc_id(thread_id)]
        if after is not None:
            where += f" AND (ts_client_ms, id) {beyond} (?, ?)"
            args += [after.ms if after.ms is not None else 0, escape_doc_id(after.id)]
        with self._read("list_messages") as conn:
            rows = conn.execute(
                f"SELECT doc FROM messages WHERE {where} "
                f"ORDER BY ts_client_ms {direction}, id {direction} LIMIT ?",
                (*args, limit),
            ).fetchall()
            return [_decode(raw, MessageDoc) for (raw,) in rows]

    def oldest_message(self, thread_id: str) -> MessageDoc | None:
        found = self.list_messages(thread_id, limit=1, order="asc")
        return found[0] if found else None

    def newest_message(self, thread_id: str) -> MessageDoc | None:
        found = self.list_messages(thread_id, limit=1, order="desc")
        return found[0] if found else None

    def first_message_since(self, thread_id: str, ts_ms: int) -> MessageDoc | None:
        with self._read("first_message_since") as conn:
            row = conn.execute(
                "SELECT doc FROM messages WHERE thread_id = ? AND ts_client_ms >= ? "
                "ORDER BY ts_client_ms ASC, id ASC LIMIT 1",
                (escape_doc_id(thread_id), ts_ms),
            ).fetchone()
            return _decode(row[0], MessageDoc) if row else None

    # -- threads ---------------------------------------------------------------------------------
    def patch_threads(self, patches: Sequence[ThreadPatch]) -> int:
        return self._fold_threads("patch_threads", patches, lambda p: p.thread_id, merge.patch_thread)

    def advance_threads(self, summaries: Sequence[ThreadSummary]) -> int:
        return self._fold_threads("advance_threads", summaries,
                                  lambda s: thread_id_for(s.account_id, s.client_jid), merge.advance_thread)

    def _fold_threads(self, what: str, items: Sequence[T], key: Callable[[T], str],
                      rule: Callable[[ThreadDoc | None, T, datetime], ThreadDoc | None]) -> int:
        """One transaction: load the threads ``items`` touch, fold each item in with ``rule``
        (a ``wadaemon.store.merge`` function), write the threads that changed."""
        if not items:
            return 0
        with self._transaction(what) as (conn, writer):
            before = self._load_threads(conn, {key(item) for item in items})
            state = dict(before)
            now = store_now()
            for item in items:
                tid = key(item)
                folded = rule(state[tid], item, now)
                if folded is not None:
                    state[tid] = folded
            for tid, after in state.items():
                if after is not None and after is not before[tid]:
                    writer.put_thread(after)
        return writer.writes

    def merge_threads(self, account_id: str, from_jid: str, into_jid: str) -> int:
        """One transaction: a merge is never seen half done. Pages through the old thread's
        messages (each page is deleted as it is moved, so re-reading the first page walks them
        all). The thread fold matches the Firestore adapter: the old thread's summary and name
        are folded in forward-only, its aliases and its own JID become aliases."""
        if from_jid == into_jid:
            return 0
        from_tid = thread_id_for(account_id, from_jid)
        into_tid = thread_id_for(account_id, into_jid)
        moved = 0
        with self._transaction("merge_threads", max_writes=None) as (conn, writer):
            while True:
                rows = conn.execute(
                    "SELECT doc FROM messages WHERE thread_id = ? ORDER BY id LIMIT ?",
                    (escape_doc_id(from_tid), READ_CHUNK),
                ).fetchall()
                if not rows:
                    break
                page = [_decode(raw, MessageDoc) for (raw,) in rows]
                existing = self._load_messages(conn, ((into_tid, doc.id) for doc in page))
                now = store_now()
                for doc in page:
                    merged = merge.merge_message(
                        existing[(into_tid, doc.id)], merge.rekey_message(doc, account_id, into_jid), now
                    )
                    if merged is not None:
                        writer.put_message(merged)
                    writer.delete_message(from_tid, doc.id)
                    moved += 1
            threads = self._load_threads(conn, [from_tid, into_tid])
            old, into = threads[from_tid], threads[into_tid]
            if old is None:
                return moved
            now = store_now()
            summary = merge.summary_of_thread(old, into_jid)
            folded = merge.advance_thread(into, summary, now) or into
            assert folded is not None  # advance_thread creates the thread when absent
            for alias in [*old.alias_jids, from_jid]:
                folded = merge.add_alias(folded, alias, now) or folded
            if folded is not into:
                writer.put_thread(folded)
            writer.delete_thread(from_tid)
        return moved

    def get_thread(self, thread_id: str) -> ThreadDoc | None:
        with self._read("get_thread") as conn:
            return self._load_threads(conn, [thread_id])[thread_id]

    def list_threads(self, account_id: str, *, limit: int, after: PageKey | None = None) -> list[ThreadDoc]:
        """Newest ``lastMessageAtMs`` first (ties by id, descending, as Firestore orders);
        threads without the field fill the rest of ``limit`` by id (as the Firestore adapter does)."""
        if limit <= 0:
            return []
        threads: list[ThreadDoc] = []
        if after is None or after.ms is not None:
            where = "account_id = ? AND last_message_at_ms IS NOT NULL"
            args: list[Any] = [account_id]
            if after is not None:
                where += " AND (last_message_at_ms, id) < (?, ?)"
                args += [after.ms, escape_doc_id(after.id)]
            with self._read("list_threads") as conn:
                rows = conn.execute(
                    f"SELECT doc FROM threads WHERE {where} "
                    "ORDER BY last_message_at_ms DESC, id DESC LIMIT ?",
                    (*args, limit),
                ).fetchall()
                threads = [_decode(raw, ThreadDoc) for (raw,) in rows]
        if len(threads) < limit:
            start = escape_doc_id(after.id) if after is not None and after.ms is None else ""
            with self._read("list_threads") as conn:
                rows = conn.execute(
                    "SELECT doc FROM threads WHERE account_id = ? AND last_message_at_ms IS NULL "
                    "AND id > ? ORDER BY id LIMIT ?",
                    (account_id, start, limit - len(threads)),
                ).fetchall()
                threads.extend(_decode(raw, ThreadDoc) for (raw,) in rows)
        return threads

    def find_thread(self, account_id: str, jid: str) -> ThreadDoc | None:
        direct = self.get_thread(thread_id_for(account_id, jid))
        if direct is not None:
            return direct
        with self._read("find_thread") as conn:
            row = conn.execute(
                "SELECT doc FROM threads WHERE account_id = ? AND EXISTS "
                "(SELECT 1 FROM json_each(doc, '$.aliasJids') WHERE value = ?) ORDER BY id LIMIT 1",
                (account_id, jid),
            ).fetchone()
        return None if row is None else _decode(row[0], ThreadDoc)

    def threads_missing_last_message(self, account_id: str, *, limit: int) -> list[ThreadDoc]:
        if limit <= 0:
            return []
        with self._read("threads_missing_last_message") as conn:
            rows = conn.execute(
                "SELECT doc FROM threads WHERE account_id = ? AND last_message_at_ms IS NULL ORDER BY id LIMIT ?",
                (account_id, limit),
            ).fetchall()
            return [_decode(raw, ThreadDoc) for (raw,) in rows]

    # -- accounts --------------------------------------------------------------------------------
    def update_account(self, account_id: str, patch: AccountDoc) -> None:
        """The stored fields, with each non-None top-level field of ``patch`` replaced whole
        (a nested map is never merged key by key) and ``updatedAt`` stamped."""
        fields = document_fields(patch)
        if not fields:
            return
        fields["updatedAt"] = store_now()
        with self._transaction("update_account") as (conn, writer):
            stored = self._account_fields(conn, account_id) or {}
            stored.update(fields)
            writer.put_account_fields(account_id, stored)

    def get_account(self, account_id: str) -> AccountDoc | None:
        with self._read("get_account") as conn:
            fields = self._account_fields(conn, account_id)
        if fields is None:
            return None
        try:
            return document_from_fields(fields, AccountDoc)
        except msgspec.ValidationError as exc:
            raise StoreError(f"stored AccountDoc does not decode: {exc}") from exc

    def list_account_ids(self) -> list[str]:
        with self._read("list_account_ids") as conn:
            return sorted(unescape_doc_id(key) for (key,) in conn.execute("SELECT id FROM accounts"))

    # -- leases ----------------------------------------------------------------------------------
    def _lease_fields_of(self, conn: sqlite3.Connection, kind: LeaseKind, key: str) -> dict[str, Any] | None:
        if kind == "recent_sync":
            return self._account_fields(conn, key)
        row = conn.execute(
            "SELECT doc FROM leases WHERE collection = ? AND id = ?", (leases.LAYOUTS[kind].collection, escape_doc_id(key))
        ).fetchone()
        return None if row is None else _fields(row[0])

    def _apply_lease(self, conn: sqlite3.Connection, writer: _Writer, kind: LeaseKind, key: str,
                     decision: LeaseDecision) -> None:
        """Store a decision of ``wadaemon.store.leases`` where ``kind`` lives, with the backfill mirror."""
        lease = decision.lease
        if decision.action == "none" or lease is None:
            return
        fields = leases.lease_fields(lease)
        if kind == "recent_sync":
            account = self._account_fields(conn, key) or {}
            if decision.action == "write":
                account.update(fields)
            else:
                for name in fields:
                    account.pop(name, None)
            writer.put_account_fields(key, account)
            return
        collection = leases.LAYOUTS[kind].collection
        if decision.action == "write":
            writer.put_lock(collection, key, fields)
        else:
            tombstone = leases.release_fields(lease)
            if tombstone is None:
                writer.delete_lock(collection, key)
            else:
                writer.put_lock(collection, key, tombstone)
        if kind == "backfill":
            # Mirrored for operators, in the same transaction as the lock itself.
            account = self._account_fields(conn, key) or {}
            for name, value in leases.backfill_mirror(lease if decision.action == "write" else None).items():
                if value is None:
                    account.pop(name, None)
                else:
                    account[name] = value
            writer.put_account_fields(key, account)

    def _cas(self, what: str, kind: LeaseKind, key: str,
             decide: Callable[[Lease | None, int], LeaseDecision]) -> LeaseDecision:
        """Read the lease, let ``decide`` (``wadaemon.store.leases``) choose, and apply it, all
        inside one ``BEGIN IMMEDIATE`` transaction."""
        with self._transaction(what, max_writes=None) as (conn, writer):
            fields = self._lease_fields_of(conn, kind, key)
            decision = decide(leases.lease_of(kind, key, fields), leases.stored_epoch(fields))
            self._apply_lease(conn, writer, kind, key, decision)
        return decision

    def acquire_lease(self, kind: LeaseKind, key: str, owner_id: str, *, ttl_ms: int, now_ms: int) -> Lease | None:
        kind = leases.lease_kind(kind)
        return self._cas("acquire_lease", kind, key, lambda current, epoch: leases.decide_acquire(
            current, epoch, kind=kind, key=key, owner_id=owner_id, ttl_ms=ttl_ms, now_ms=now_ms)).lease

    def renew_lease(self, lease: Lease, *, ttl_ms: int, now_ms: int) -> Lease | None:
        return self._cas("renew_lease", leases.lease_kind(lease.kind), lease.key,
                         lambda current, _: leases.decide_renew(current, lease, ttl_ms=ttl_ms, now_ms=now_ms)).lease

    def renew_leases(self, held: Sequence[Lease], *, ttl_ms: int, now_ms: int) -> list[Lease | None]:
        """All of them in one transaction; each judged on its own."""
        results: list[Lease | None] = []
        with self._transaction("renew_leases", max_writes=None) as (conn, writer):
            for lease in held:
                kind = leases.lease_kind(lease.kind)
                current = leases.lease_of(kind, lease.key, self._lease_fields_of(conn, kind, lease.key))
                decision = leases.decide_renew(current, lease, ttl_ms=ttl_ms, now_ms=now_ms)
                self._apply_lease(conn, writer, kind, lease.key, decision)
                results.append(decision.lease)
        return results

    def release_lease(self, lease: Lease) -> bool:
        return self._cas("release_lease", leases.lease_kind(lease.kind), lease.key,
                         lambda current, _: leases.decide_release(current, lease)).action == "release"

    def read_lease(self, kind: LeaseKind, key: str) -> Lease | None:
        kind = leases.lease_kind(kind)
        with self._read("read_lease") as conn:
            return leases.lease_of(kind, key, self._lease_fields_of(conn, kind, key))

    def list_account_leases(self) -> list[Lease]:
        with self._read("list_account_leases") as conn:
            rows = conn.execute("SELECT id, doc FROM leases WHERE collection = ?", (leases.ACCOUNT_LEASES,)).fetchall()
        found = (leases.lease_of("account", unescape_doc_id(key), _fields(doc)) for key, doc in rows)
        return sorted((lease for lease in found if lease is not None), key=lambda lease: lease.key)

    # -- instances -------------------------------------------------------------------------------
    def put_instance(self, doc: InstanceDoc) -> None:
        with self._transaction("put_instance", max_writes=None) as (_, writer):
            writer.put_lock(leases.INSTANCES, doc.instance_id, document_fields(doc))

    def list_instances(self) -> list[InstanceDoc]:
        with self._read("list_instances") as conn:
            rows = conn.execute("SELECT doc FROM leases WHERE collection = ?", (leases.INSTANCES,)).fetchall()
        return sorted((_decode(doc, InstanceDoc) for (doc,) in rows), key=lambda doc: doc.instance_id)

    def delete_instance(self, instance_id: str) -> None:
        with self._transaction("delete_instance", max_writes=None) as (_, writer):
            writer.delete_lock(leases.INSTANCES, instance_id)

    # -- lifecycle -------------------------------------------------------------------------------
    def ping(self) -> bool:
        """A trivial query; False (never an exception) when closed, broken or stuck."""
        if not self._lock.acquire(timeout=PING_TIMEOUT_S):
            return False
        try:
            if self._closed:
                return False
            self._conn.execute("SELECT 1 FROM threads LIMIT 1").fetchall()
        except Exception as exc:
            log.debug("sqlite ping failed: %s", exc)
            return False
        finally:
            self._lock.release()
        return True

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._reader is not None:
                self._reader.close()
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()


class LocalReader(SqliteStore):
    """``SqliteStore.local_reader()``: the reads of the store on a second connection that
    never waits, plus ``marks`` to tell whether a page read earlier may be reused."""

    def __init__(self, store: SqliteStore) -> None:
        super().__init__(store.path, keep_revoked_body=store.keep_revoked_body, busy_timeout=0.0, _reader=True)
        self._store = store

    def marks(self, thread_id: str | None = None) -> tuple[int, ...] | None:
        """What a page depends on, as numbers that change whenever it may have changed:
        ``thread_id=None`` — any thread document (the thread lists); a thread id — that
        thread's document and messages. Commits of other processes change every mark. None
        when it cannot be told at once (a write of this store is under way)."""
        return self._store._marks(thread_id)
