"""The Firestore adapter of the store contract (``wadaemon.store.contract``), docs/data-model.md layout.

Layout (document ids escaped with ``escape_doc_id``)::

    threads/{accountId__clientJid}                    ThreadDoc
    threads/{threadId}/messages/{waMessageId}         MessageDoc
    accounts/{accountId}                              AccountDoc (+ recentSyncLease*, autoBackfillLease*)
    whatsapp_account_leases/{accountId}               {ownerId, expiresAtMs, acquiredAt}
    whatsapp_backfill_locks/{accountId}               {ownerId, expiresAtMs, startedAt}

How writes work: every batch operation reads the documents it touches with
``client.get_all`` (per 500 references), applies the pure rules of ``wadaemon.store.merge``,
and writes only the documents that changed, in commits of at most 500 writes, several
commits of one call in flight at once (``RPC_CONCURRENCY``; they touch distinct documents).
A changed document is written with an update mask naming its changed top-level fields
(``firestore_wire``: the semantics of ``set(fields, merge=[names])``): each is replaced
*whole* (a map such as ``reactions`` loses removed keys, which ``merge=True`` would keep),
fields that became absent are deleted, and fields this daemon does not know (written by the
Flutter app or other tools) survive. Read-modify-write without transactions is safe because
the contract serialises writes per account (``StoreRunner`` lanes). ``upsert_messages`` first
tries to *create* each group without reading (see there): new messages are the common case.

Leases are compare-and-swap on the document's ``update_time`` (``create()`` when absent):
transactions nearly stall on the emulator under contention, and CAS is equally valid on
production. A failed precondition is re-read and re-judged a few times, because the
recent-sync lease lives on ``accounts/*``, whose update time also moves with status patches.

Failures: gRPC outages, timeouts and contention become ``StoreUnavailable``; everything else
``StoreError``. Every RPC carries a deadline and a short retry budget, so an outage fails fast
instead of hanging (the callers retry ``StoreUnavailable`` with their own backoff). gRPC's
reconnect backoff is capped (it grows to 120 s by default, so the store would stay
"unavailable" for up to two minutes after the backend came back).

Queries and indexes: ``list_threads`` (``accountId ==`` ordered by ``lastMessageAtMs`` desc)
needs the composite index declared in ``firestore.indexes.json`` at the repository root;
message queries order one subcollection by ``tsClientMs`` (automatic single-field index).
Firestore cannot query for a *missing* field, so ``threads_missing_last_message`` scans the
account's threads with a one-field projection and filters client-side (see there).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
from google.api_core import exceptions as gexc
from google.api_core.retry import Retry, if_exception_type
from google.auth import exceptions as auth_exc
from google.cloud import firestore
from google.cloud.firestore_v1 import DELETE_FIELD, FieldFilter
from google.cloud.firestore_v1.bulk_batch import BulkWriteBatch
from google.cloud.firestore_v1.field_path import FieldPath
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
    Store,
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
from wadaemon.store.firestore_wire import create_write, delete_write, update_write
from wadaemon.store.leases import LeaseDecision

#: The implicit ``__name__`` ordering, made explicit so cursors can name it.
DOCUMENT_ID = FieldPath.document_id()

log = logging.getLogger("wadaemon.store.firestore")

D = TypeVar("D", bound=Doc)
T = TypeVar("T")
R = TypeVar("R")

#: Marks the threads of the RPC pool (see ``FirestoreStore.in_parallel``).
_in_pool = threading.local()

THREADS = "threads"
MESSAGES = "messages"
ACCOUNTS = "accounts"

MAX_BATCH_WRITES = 500
#: Messages moved per commit by ``merge_threads`` (a move is two writes: set + delete).
MERGE_PAGE = 200
#: References per ``get_all`` call.
READ_CHUNK = 500
#: Compare-and-swap attempts before a contended lease operation gives up.
CAS_ATTEMPTS = 6

#: Batch RPCs (500-write commits, 500-document reads) of one store call in flight at once.
#: Latency-bound on Cloud Firestore; on the emulator (2 cores shared with us) 2 is the knee.
RPC_CONCURRENCY = 4

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_RETRY_BUDGET_S = 2.0
PING_TIMEOUT_S = 3.0

#: Failures worth retrying later: outage, deadline, contention, quota.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.Aborted,
    gexc.ResourceExhausted,
    gexc.InternalServerError,
    gexc.RetryError,
    gexc.GatewayTimeout,
    gexc.TooManyRequests,
    gexc.Cancelled,
    auth_exc.TransportError,
)
#: Lost compare-and-swap: someone else wrote the document first.
_CAS_LOST: tuple[type[BaseException], ...] = (gexc.FailedPrecondition, gexc.Conflict, gexc.NotFound)


# gRPC channel arguments: reconnect at most every 2 s once the backend is back.
_RECONNECT_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


def _tune_grpc_channels() -> None:
    """Add the reconnect options to the channel options google-cloud-firestore builds its
    channels with (module-level lists read when a client opens its channel; there is no
    public hook). If a library version renames them we only lose the faster recovery."""
    try:
        from google.cloud.firestore_v1 import base_client
    except ImportError:  # pragma: no cover
        return
    for name in ("_GRPC_MSG_SIZE_OPTIONS", "_DEFAULT_CHANNEL_OPTIONS"):
        options = getattr(base_client, name, None)
        if isinstance(options, list):
            present = {key for key, _ in options}
            options.extend(opt for opt in _RECONNECT_OPTIONS if opt[0] not in present)


_tune_grpc_channels()


def _plain(value: Any) -> Any:
    """Firestore values -> what ``document_from_fields`` decodes: ``DatetimeWithNanoseconds``
    (a datetime subclass msgspec refuses) becomes a plain aware datetime."""
    if isinstance(value, datetime):
        if type(value) is datetime:
            return value
        return datetime(
            value.year, value.month, value.day, value.hour, value.minute, value.second,
            value.microsecond, tzinfo=value.tzinfo,
        )
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _decode(fields: dict[str, Any] | None, doc_type: type[D]) -> D:
    try:
        return document_from_fields(_plain(fields or {}), doc_type)
    except msgspec.ValidationError as exc:
        raise StoreError(f"stored {doc_type.__name__} does not decode: {exc}") from exc


class _Delta(msgspec.Struct, frozen=True):
    """Top-level fields to write (changed or new values) and fields that became absent."""

    fields: dict[str, Any]
    deleted: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.fields or self.deleted)


def _delta(before: Doc | None, after: Doc) -> _Delta:
    new = document_fields(after)
    if before is None:
        return _Delta(new)
    old = document_fields(before)
    changed = {key: value for key, value in new.items() if old.get(key, _MISSING) != value}
    return _Delta(changed, tuple(key for key in old if key not in new))


_MISSING = object()


def _fold_messages(stored: MessageDoc | None, docs: list[MessageDoc], now: datetime) -> tuple[MessageDoc | None, int]:
    """``stored`` with every incoming version of it merged in order; and how many of them
    changed nothing."""
    state, unchanged = stored, 0
    for doc in docs:
        merged = merge.merge_message(state, doc, now)
        if merged is None:
            unchanged += 1
        else:
            state = merged
    return state, unchanged


class _Writes:
    """Accumulates raw ``Write`` protobufs (``firestore_wire``) and commits them in batches of
    at most 500, concurrently when there are several (they touch distinct documents)."""

    def __init__(self, store: FirestoreStore) -> None:
        self._store = store
        self._pbs: list[Any] = []

    def __len__(self) -> int:
        return len(self._pbs)

    def set_fields(self, ref: Any, delta: _Delta) -> None:
        if delta:
            self._pbs.append(update_write(ref._document_path, delta.fields, delta.deleted))

    def create(self, ref: Any, fields: dict[str, Any]) -> None:
        self._pbs.append(create_write(ref._document_path, fields))

    def delete(self, ref: Any) -> None:
        self._pbs.append(delete_write(ref._document_path))

    def commit(self) -> int:
        batches = [self._pbs[start : start + MAX_BATCH_WRITES] for start in range(0, len(self._pbs), MAX_BATCH_WRITES)]
        self._pbs = []
        return len(self._store.in_parallel(self._commit_one, batches))

    def _commit_one(self, pbs: list[Any]) -> None:
        batch = self._store.client.batch()
        batch._add_write_pbs(pbs)
        batch.commit(**self._store.rpc)


class FirestoreStore:
    """``Store`` on Cloud Firestore (or its emulator). Thread-safe: holds no mutable state
    besides the client, which may be shared by the worker threads of ``StoreRunner``."""

    backend = "firestore"

    def __init__(
        self,
        client: Any,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        retry_budget: float = DEFAULT_RETRY_BUDGET_S,
        ping_timeout: float = PING_TIMEOUT_S,
        keep_revoked_body: bool = False,
        rpc_concurrency: int = RPC_CONCURRENCY,
    ) -> None:
        self.client = client
        self._pool = ThreadPoolExecutor(max(1, rpc_concurrency), thread_name_prefix="firestore-rpc")
        self.timeout = timeout
        self.ping_timeout = ping_timeout
        self.keep_revoked_body = keep_revoked_body
        retry = Retry(
            predicate=if_exception_type(gexc.ServiceUnavailable, gexc.InternalServerError),
            initial=0.1,
            maximum=1.0,
            multiplier=2.0,
            timeout=retry_budget,
        )
        #: Keyword arguments of every idempotent RPC.
        self.rpc: dict[str, Any] = {"retry": retry, "timeout": timeout}
        #: Compare-and-swap writes are not retried blindly (a lost answer would read as lost).
        self.rpc_once: dict[str, Any] = {"retry": None, "timeout": timeout}

    @classmethod
    def from_settings(
        cls,
        project: str | None,
        service_account_json: str | None,
        credentials_path: str | None,
        emulator_host: str | None,
        **kwargs: Any,
    ) -> FirestoreStore:
        """The emulator when ``emulator_host`` is set (the client then uses anonymous
        credentials and an insecure channel by itself: it reads ``FIRESTORE_EMULATOR_HOST``,
        so that variable is set from the argument); else a service account given as a JSON
        string; else ``credentials_path`` (any credentials file google-auth understands);
        else Application Default Credentials."""
        try:
            if emulator_host:
                os.environ["FIRESTORE_EMULATOR_HOST"] = emulator_host
                client = firestore.Client(project=project or None)
            elif service_account_json:
                from google.oauth2 import service_account

                try:
                    info = json.loads(service_account_json)
                except json.JSONDecodeError as exc:
                    raise StoreError(f"FIREBASE_SERVICE_ACCOUNT_JSON is not valid JSON ({exc.msg} at char {exc.pos})") from None
                if not isinstance(info, dict):
                    raise StoreError("FIREBASE_SERVICE_ACCOUNT_JSON must be a JSON object (a service account key)")
                credentials = service_account.Credentials.from_service_account_info(
                    info, scopes=firestore.Client.SCOPE
                )
                client = firestore.Client(project=project or info.get("project_id"), credentials=credentials)
            elif credentials_path:
                import google.auth

                credentials, file_project = google.auth.load_credentials_from_file(
                    credentials_path, scopes=firestore.Client.SCOPE
                )
                client = firestore.Client(project=project or file_project, credentials=credentials)
            else:
                client = firestore.Client(project=project or None)
        except StoreError:
            raise
        except (auth_exc.DefaultCredentialsError, ValueError, KeyError, OSError) as exc:
            raise StoreError(f"cannot set up Firestore credentials: {exc}") from exc
        return cls(client, **kwargs)

    # -- references ------------------------------------------------------------------------------
    def _thread_ref(self, thread_id: str) -> Any:
        return self.client.collection(THREADS).document(escape_doc_id(thread_id))

    def _message_ref(self, thread_id: str, message_id: str) -> Any:
        return self._thread_ref(thread_id).collection(MESSAGES).document(escape_doc_id(message_id))

    def _account_ref(self, account_id: str) -> Any:
        return self.client.collection(ACCOUNTS).document(escape_doc_id(account_id))

    def _lease_ref(self, kind: LeaseKind, key: str) -> Any:
        return self.client.collection(leases.LAYOUTS[kind].collection).document(escape_doc_id(key))

    def _instance_ref(self, instance_id: str) -> Any:
        return self.client.collection(leases.INSTANCES).document(escape_doc_id(instance_id))

    # -- plumbing --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except StoreError:
            raise
        except UNAVAILABLE_ERRORS as exc:
            raise StoreUnavailable(f"firestore {what}: {type(exc).__name__}: {exc}") from exc
        except Exception as exc:
            raise StoreError(f"firestore {what}: {type(exc).__name__}: {exc}") from exc

    def _read(self, refs: Iterable[Any]) -> dict[str, Any]:
        """Snapshots by document path (one ``get_all`` per 500 distinct references, concurrently)."""
        unique = list({ref.path: ref for ref in refs}.values())
        found: dict[str, Any] = {}

        def read(chunk: list[Any]) -> None:
            for snap in self.client.get_all(chunk, **self.rpc):
                found[snap.reference.path] = snap

        self.in_parallel(read, [unique[start : start + READ_CHUNK] for start in range(0, len(unique), READ_CHUNK)])
        return found

    def _read_docs(self, refs: Iterable[Any], doc_type: type[D]) -> dict[str, D | None]:
        return {
            path: _decode(snap.to_dict(), doc_type) if snap.exists else None
            for path, snap in self._read(refs).items()
        }

    def _get(self, ref: Any, doc_type: type[D]) -> D | None:
        snap = ref.get(**self.rpc)
        return _decode(snap.to_dict(), doc_type) if snap.exists else None

    def _query_docs(self, query: Any, doc_type: type[D]) -> list[D]:
        return [_decode(snap.to_dict(), doc_type) for snap in query.stream(**self.rpc)]

    # -- messages --------------------------------------------------------------------------------
    def upsert_messages(self, docs: Sequence[MessageDoc]) -> UpsertResult:
        """In groups of at most 500 distinct documents, concurrently. Each group is first
        *created* in one commit (every write preconditioned on the document not existing), with
        no read: that is the common case (a pairing history, a new live message), and it costs
        exactly one write per document. If any document exists the commit changes nothing and
        fails as a whole; the group then takes the read -> merge -> write-what-changed path,
        which makes replays cost reads but no writes."""
        if not docs:
            return UpsertResult(written=0, unchanged=0, commits=0)
        incoming: dict[tuple[str, str], list[MessageDoc]] = {}
        for doc in docs:
            incoming.setdefault((doc.thread_id, doc.id), []).append(doc)
        keys = list(incoming)
        groups = [keys[start : start + MAX_BATCH_WRITES] for start in range(0, len(keys), MAX_BATCH_WRITES)]
        now = store_now()
        with self._errors("upsert_messages"):
            results = self.in_parallel(lambda group: self._upsert_group(group, incoming, now), groups)
        return UpsertResult(
            written=sum(r.written for r in results),
            unchanged=sum(r.unchanged for r in results),
            commits=sum(r.commits for r in results),
        )

    def _upsert_group(
        self, keys: list[tuple[str, str]], incoming: dict[tuple[str, str], list[MessageDoc]], now: datetime
    ) -> UpsertResult:
        refs = {key: self._message_ref(*key) for key in keys}
        created = _Writes(self)
        unchanged = 0
        for key, ref in refs.items():
            state, same = _fold_messages(None, incoming[key], now)
            unchanged += same
            assert state is not None  # the first write of a new document always changes it
            created.create(ref, document_fields(state))
        try:
            created.commit()
        except gexc.AlreadyExists:
            pass  # some document exists: nothing was written; merge them one by one
        else:
            return UpsertResult(written=len(keys), unchanged=unchanged, commits=1)
        stored = self._read_docs(refs.values(), MessageDoc)
        writes = _Writes(self)
        written = unchanged = 0
        for key, ref in refs.items():
            before = stored.get(ref.path)
            after, same = _fold_messages(before, incoming[key], now)
            unchanged += same
            if after is not None and after is not before:
                writes.set_fields(ref, _delta(before, after))
                written += 1
        commits = writes.commit()
        return UpsertResult(written=written, unchanged=unchanged, commits=commits)

    def _apply_to_messages(
        self,
        what: str,
        items: Sequence[T],
        address: Callable[[T], tuple[str, str]],
        apply: Callable[[MessageDoc, T, datetime], MessageDoc | None],
    ) -> list[T]:
        if not items:
            return []
        with self._errors(what):
            refs = {address(item): self._message_ref(*address(item)) for item in items}
            stored = self._read_docs(refs.values(), MessageDoc)
            before = {key: stored.get(ref.path) for key, ref in refs.items()}
            state = dict(before)
            now = store_now()
            missing: list[T] = []
            for item in items:
                key = address(item)
                current = state[key]
                if current is None:
                    missing.append(item)
                    continue
                changed = apply(current, item, now)
                if changed is not None:
                    state[key] = changed
            writes = _Writes(self)
            for key, ref in refs.items():
                after = state[key]
                if after is not None and after is not before[key]:
                    writes.set_fields(ref, _delta(before[key], after))
            writes.commit()
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
        with self._errors("finish_outbound"):
            local_ref = self._message_ref(thread_id, local_id)
            now = store_now()
            writes = _Writes(self)
            if not wa_message_id:
                queued = self._get(local_ref, MessageDoc)
                if queued is not None and queued.status == "queued":
                    writes.set_fields(local_ref, _delta(queued, replace(queued, status="failed", updated_at=now)))
                writes.commit()
                return
            wa_ref = self._message_ref(thread_id, wa_message_id)
            stored = self._read_docs([local_ref, wa_ref], MessageDoc)
            queued, echo = stored.get(local_ref.path), stored.get(wa_ref.path)
            if queued is None:
                # Already settled (a retry after a commit whose answer was lost): only move the
                # status forward.
                if echo is not None and local_ref.path != wa_ref.path:
                    moved = merge.merge_message(echo, replace(echo, status=status), now)
                    if moved is not None:
                        writes.set_fields(wa_ref, _delta(echo, moved))
                writes.commit()
                return
            if local_ref.path == wa_ref.path:
                echo = None
            settled = merge.settle_outbound(queued, echo, wa_message_id=wa_message_id, status=status, now=now)
            if local_ref.path == wa_ref.path:
                writes.set_fields(wa_ref, _delta(queued, settled))
            else:
                writes.set_fields(wa_ref, _delta(echo, settled))
                writes.delete(local_ref)  # same commit: one document in the end, atomically
            writes.commit()

    def get_message(self, thread_id: str, message_id: str) -> MessageDoc | None:
        with self._errors("get_message"):
            return self._get(self._message_ref(thread_id, message_id), MessageDoc)

    def list_messages(self, thread_id: str, *, limit: int, order: MessageOrder = "desc",
                      after: PageKey | None = None) -> list[MessageDoc]:
        if limit <= 0:
            return []
        direction = firestore.Query.DESCENDING if order == "desc" else firestore.Query.ASCENDING
        with self._errors("list_messages"):
            query = (
                self._thread_ref(thread_id).collection(MESSAGES)
                .order_by("tsClientMs", direction=direction)
                .order_by(DOCUMENT_ID, direction=direction)
            )
            if after is not None:
                query = query.start_after([after.ms if after.ms is not None else 0, escape_doc_id(after.id)])
            return self._query_docs(query.limit(limit), MessageDoc)

    def oldest_message(self, thread_id: str) -> MessageDoc | None:
        found = self.list_messages(thread_id, limit=1, order="asc")
        return found[0] if found else None

    def newest_message(self, thread_id: str) -> MessageDoc | None:
        found = self.list_messages(thread_id, limit=1, order="desc")
        return found[0] if found else None

    def first_message_since(self, thread_id: str, ts_ms: int) -> MessageDoc | None:
        with self._errors("first_message_since"):
            query = (
                self._thread_ref(thread_id).collection(MESSAGES)
                .where(filter=FieldFilter("tsClientMs", ">=", ts_ms))
                .order_by("tsClientMs", direction=firestore.Query.ASCENDING).limit(1)
            )
            found = self._query_docs(query, MessageDoc)
        return found[0] if found else None

    # -- threads ---------------------------------------------------------------------------------
    def patch_threads(self, patches: Sequence[ThreadPatch]) -> int:
        return self._fold_threads("patch_threads", patches, lambda p: p.thread_id, merge.patch_thread)

    def advance_threads(self, summaries: Sequence[ThreadSummary]) -> int:
        return self._fold_threads("advance_threads", summaries,
                                  lambda s: thread_id_for(s.account_id, s.client_jid), merge.advance_thread)

    def _fold_threads(self, what: str, items: Sequence[R], key: Callable[[R], str],
                      rule: Callable[[ThreadDoc | None, R, datetime], ThreadDoc | None]) -> int:
        """Read the threads ``items`` touch, fold each item in with ``rule`` (a
        ``wadaemon.store.merge`` function), write the threads that changed."""
        if not items:
            return 0
        with self._errors(what):
            refs = {tid: self._thread_ref(tid) for tid in {key(item) for item in items}}
            stored = self._read_docs(refs.values(), ThreadDoc)
            before = {tid: stored.get(ref.path) for tid, ref in refs.items()}
            state = dict(before)
            now = store_now()
            for item in items:
                tid = key(item)
                folded = rule(state[tid], item, now)
                if folded is not None:
                    state[tid] = folded
            writes = _Writes(self)
            for tid, ref in refs.items():
                after = state[tid]
                if after is not None and after is not before[tid]:
                    writes.set_fields(ref, _delta(before[tid], after))
            written = len(writes)
            writes.commit()
        return written

    def merge_threads(self, account_id: str, from_jid: str, into_jid: str) -> int:
        if from_jid == into_jid:
            return 0
        from_tid = thread_id_for(account_id, from_jid)
        into_tid = thread_id_for(account_id, into_jid)
        from_ref, into_ref = self._thread_ref(from_tid), self._thread_ref(into_tid)
        moved = 0
        with self._errors("merge_threads"):
            source = from_ref.collection(MESSAGES)
            while True:
                # Each page is deleted by its own commit, so re-reading the first page walks
                # the whole subcollection; a crash between commits leaves a resumable state.
                page = [snap for snap in source.limit(MERGE_PAGE).stream(**self.rpc) if snap.exists]
                if not page:
                    break
                incoming = {snap.reference.path: _decode(snap.to_dict(), MessageDoc) for snap in page}
                targets = {
                    path: self._message_ref(into_tid, doc.id) for path, doc in incoming.items()
                }
                existing = self._read_docs(targets.values(), MessageDoc)
                now = store_now()
                writes = _Writes(self)
                for snap in page:
                    path = snap.reference.path
                    target = targets[path]
                    rekeyed = merge.rekey_message(incoming[path], account_id, into_jid)
                    current = existing.get(target.path)
                    merged = merge.merge_message(current, rekeyed, now)
                    if merged is not None:
                        writes.set_fields(target, _delta(current, merged))
                    writes.delete(snap.reference)
                    moved += 1
                writes.commit()
            threads = self._read_docs([from_ref, into_ref], ThreadDoc)
            old, into = threads.get(from_ref.path), threads.get(into_ref.path)
            if old is None:
                return moved
            now = store_now()
            # The old thread's summary and name fold in forward-only (same rule as SQLite).
            summary = merge.summary_of_thread(old, into_jid)
            folded = merge.advance_thread(into, summary, now) or into
            assert folded is not None  # advance_thread creates the thread when absent
            for alias in [*old.alias_jids, from_jid]:
                folded = merge.add_alias(folded, alias, now) or folded
            writes = _Writes(self)
            writes.set_fields(into_ref, _delta(into, folded))
            writes.delete(from_ref)
            writes.commit()
        return moved

    def get_thread(self, thread_id: str) -> ThreadDoc | None:
        with self._errors("get_thread"):
            return self._get(self._thread_ref(thread_id), ThreadDoc)

    def list_threads(self, account_id: str, *, limit: int, after: PageKey | None = None) -> list[ThreadDoc]:
        """Newest ``lastMessageAtMs`` first (composite index ``accountId`` asc +
        ``lastMessageAtMs`` desc, ids descending after it). Firestore's ordering leaves out
        documents without the field; like SQL's NULLS LAST, threads without it fill the rest
        of ``limit``, by id."""
        if limit <= 0:
            return []
        threads: list[ThreadDoc] = []
        if after is None or after.ms is not None:
            with self._errors("list_threads"):
                query = (
                    self.client.collection(THREADS)
                    .where(filter=FieldFilter("accountId", "==", account_id))
                    .order_by("lastMessageAtMs", direction=firestore.Query.DESCENDING)
                    .order_by(DOCUMENT_ID, direction=firestore.Query.DESCENDING)
                )
                if after is not None:
                    query = query.start_after([after.ms, escape_doc_id(after.id)])
                threads = self._query_docs(query.limit(limit), ThreadDoc)
        if len(threads) < limit:
            after_id = after.id if after is not None and after.ms is None else None
            threads.extend(self._threads_without_last_message(account_id, limit - len(threads), after_id))
        return threads

    def find_thread(self, account_id: str, jid: str) -> ThreadDoc | None:
        direct = self.get_thread(thread_id_for(account_id, jid))
        if direct is not None:
            return direct
        with self._errors("find_thread"):
            query = (
                self.client.collection(THREADS)
                .where(filter=FieldFilter("accountId", "==", account_id))
                .where(filter=FieldFilter("aliasJids", "array_contains", jid))
                .limit(1)
            )
            found = self._query_docs(query, ThreadDoc)
        return found[0] if found else None

    def threads_missing_last_message(self, account_id: str, *, limit: int) -> list[ThreadDoc]:
        return self._threads_without_last_message(account_id, limit, None)

    def _threads_without_last_message(self, account_id: str, limit: int,
                                      after_id: str | None) -> list[ThreadDoc]:
        """Firestore cannot select documents *lacking* a field (``== None`` matches only an
        explicit null, which this daemon never writes). So: stream the account's threads by id
        with a projection of ``lastMessageAtMs`` alone (cheap: ids and one integer), stop after
        ``limit`` hits, then fetch those documents whole. Cost: one read per thread of the
        account scanned, done by repair runs and the last page of a thread list."""
        if limit <= 0:
            return []
        with self._errors("threads_missing_last_message"):
            query = (
                self.client.collection(THREADS)
                .where(filter=FieldFilter("accountId", "==", account_id))
                .order_by(DOCUMENT_ID)
                .select(["lastMessageAtMs"])
            )
            if after_id is not None:
                query = query.start_after([escape_doc_id(after_id)])
            refs: list[Any] = []
            stream = query.stream(**self.rpc)
            try:
                for snap in stream:
                    if (snap.to_dict() or {}).get("lastMessageAtMs") is None:
                        refs.append(snap.reference)
                        if len(refs) >= limit:
                            break
            finally:
                close = getattr(stream, "close", None)
                if close is not None:
                    close()
            found = self._read_docs(refs, ThreadDoc)
            docs = [found.get(ref.path) for ref in refs]
            return [doc for doc in docs if doc is not None and doc.last_message_at_ms is None]
    def update_account(self, account_id: str, patch: AccountDoc) -> None:
        fields = document_fields(patch)
        if not fields:
            return
        fields["updatedAt"] = store_now()
        with self._errors("update_account"):
            writes = _Writes(self)
            writes.set_fields(self._account_ref(account_id), _Delta(fields))
            writes.commit()

    def get_account(self, account_id: str) -> AccountDoc | None:
        with self._errors("get_account"):
            return self._get(self._account_ref(account_id), AccountDoc)

    def list_account_ids(self) -> list[str]:
        with self._errors("list_account_ids"):
            query = self.client.collection(ACCOUNTS).select([])
            return sorted(unescape_doc_id(snap.id) for snap in query.stream(**self.rpc))

    # -- leases ----------------------------------------------------------------------------------
    def _cas(self, what: str, kind: LeaseKind, key: str,
             decide: Callable[[Lease | None, int], LeaseDecision]) -> LeaseDecision | None:
        """Read the lease, let ``decide`` (``wadaemon.store.leases``) choose, and write its
        decision conditioned on the document not having changed since the read. A lost race is
        re-read and re-decided (the document may have changed for another reason, e.g. a
        status patch on ``accounts/*``); None after ``CAS_ATTEMPTS`` lost races."""
        ref = self._lease_ref(kind, key)
        with self._errors(what):
            for _ in range(CAS_ATTEMPTS):
                snap = ref.get(**self.rpc)
                fields = snap.to_dict() if snap.exists else None
                decision = decide(leases.lease_of(kind, key, fields), leases.stored_epoch(fields))
                if decision.action == "none":
                    return decision
                option = self.client.write_option(last_update_time=snap.update_time) if snap.exists else None
                batch = self.client.batch()
                self._add_lease_write(batch, ref, kind, key, decision, snap.exists, option)
                try:
                    batch.commit(**self.rpc_once)
                except _CAS_LOST:
                    continue
                return decision
        return None

    def _add_lease_write(self, batch: Any, ref: Any, kind: LeaseKind, key: str, decision: LeaseDecision,
                         exists: bool, option: Any) -> None:
        lease = decision.lease
        assert lease is not None
        if decision.action == "write":
            fields = leases.lease_fields(lease)
            if exists:
                batch.update(ref, fields, option=option)
            else:
                batch.create(ref, fields)
        else:  # release
            tombstone = leases.release_fields(lease)
            if tombstone is not None:
                batch.update(ref, tombstone, option=option)
            elif kind == "recent_sync":
                batch.update(ref, dict.fromkeys(leases.lease_fields(lease), DELETE_FIELD), option=option)
            else:
                batch.delete(ref, option=option)
        if kind == "backfill":
            # Mirrored for operators, in the same atomic commit as the lock itself.
            mirror = leases.backfill_mirror(lease if decision.action == "write" else None)
            fields = {name: DELETE_FIELD if value is None else value for name, value in mirror.items()}
            batch.set(self._account_ref(key), fields, merge=list(fields))

    def acquire_lease(self, kind: LeaseKind, key: str, owner_id: str, *, ttl_ms: int, now_ms: int) -> Lease | None:
        kind = leases.lease_kind(kind)
        decision = self._cas("acquire_lease", kind, key, lambda current, epoch: leases.decide_acquire(
            current, epoch, kind=kind, key=key, owner_id=owner_id, ttl_ms=ttl_ms, now_ms=now_ms))
        # None: others kept winning the race, so not acquired this time.
        return decision.lease if decision is not None else None

    def renew_lease(self, lease: Lease, *, ttl_ms: int, now_ms: int) -> Lease | None:
        decision = self._cas("renew_lease", leases.lease_kind(lease.kind), lease.key,
                             lambda current, _: leases.decide_renew(current, lease, ttl_ms=ttl_ms, now_ms=now_ms))
        if decision is None:
            raise StoreUnavailable(f"firestore renew_lease: {lease.kind} lease {lease.key!r} stayed contended")
        return decision.lease

    def renew_leases(self, held: Sequence[Lease], *, ttl_ms: int, now_ms: int) -> list[Lease | None]:
        """One read (``get_all``) and one non-atomic ``batch_write`` for all of them, each write
        conditioned on its own document's update time: an atomic commit would fail whole on
        the one lease another instance took, ``batch_write`` reports each write. A write whose
        precondition failed is re-judged alone through ``renew_lease``."""
        if not held:
            return []
        refs = [self._lease_ref(leases.lease_kind(lease.kind), lease.key) for lease in held]
        results: list[Lease | None] = [None] * len(held)
        with self._errors("renew_leases"):
            snaps = {snap.reference.path: snap for snap in self.client.get_all(refs, **self.rpc)}
            batch = BulkWriteBatch(self.client)
            pending: list[int] = []
            for i, (lease, ref) in enumerate(zip(held, refs, strict=True)):
                snap = snaps.get(ref.path)
                if snap is None or not snap.exists:
                    continue
                fields = snap.to_dict()
                decision = leases.decide_renew(leases.lease_of(leases.lease_kind(lease.kind), lease.key, fields),
                                               lease, ttl_ms=ttl_ms, now_ms=now_ms)
                if decision.action == "none":
                    continue
                option = self.client.write_option(last_update_time=snap.update_time)
                self._add_lease_write(batch, ref, leases.lease_kind(lease.kind), lease.key, decision, True, option)
                results[i] = decision.lease
                pending.append(i)
            if not pending:
                return results
            response = batch.commit(**self.rpc_once)
            for i, status in zip(pending, response.status, strict=True):
                if status.code != 0:  # not OK: raced with someone; judge this one alone
                    results[i] = self.renew_lease(held[i], ttl_ms=ttl_ms, now_ms=now_ms)
        return results

    def release_lease(self, lease: Lease) -> bool:
        decision = self._cas("release_lease", leases.lease_kind(lease.kind), lease.key,
                             lambda current, _: leases.decide_release(current, lease))
        if decision is None:
            raise StoreUnavailable(f"firestore release_lease: {lease.kind} lease {lease.key!r} stayed contended")
        return decision.action == "release"

    def read_lease(self, kind: LeaseKind, key: str) -> Lease | None:
        kind = leases.lease_kind(kind)
        with self._errors("read_lease"):
            snap = self._lease_ref(kind, key).get(**self.rpc)
            return leases.lease_of(kind, key, snap.to_dict() if snap.exists else None)

    def list_account_leases(self) -> list[Lease]:
        with self._errors("list_account_leases"):
            found = (leases.lease_of("account", unescape_doc_id(snap.id), snap.to_dict())
                     for snap in self.client.collection(leases.ACCOUNT_LEASES).stream(**self.rpc))
            return sorted((lease for lease in found if lease is not None), key=lambda lease: lease.key)

    # -- instances -------------------------------------------------------------------------------
    def put_instance(self, doc: InstanceDoc) -> None:
        with self._errors("put_instance"):
            self._instance_ref(doc.instance_id).set(document_fields(doc), **self.rpc)

    def list_instances(self) -> list[InstanceDoc]:
        with self._errors("list_instances"):
            docs = (document_from_fields(snap.to_dict() or {}, InstanceDoc)
                    for snap in self.client.collection(leases.INSTANCES).stream(**self.rpc))
            return sorted(docs, key=lambda doc: doc.instance_id)

    def delete_instance(self, instance_id: str) -> None:
        with self._errors("delete_instance"):
            self._instance_ref(instance_id).delete(**self.rpc)

    # -- lifecycle -------------------------------------------------------------------------------
    def ping(self) -> bool:
        try:
            self.client.collection(ACCOUNTS).document("wadaemon-ping").get(retry=None, timeout=self.ping_timeout)
        except Exception as exc:
            log.debug("firestore ping failed: %s", exc)
            return False
        return True

    def in_parallel(self, call: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``[call(item) for item in items]``, up to ``rpc_concurrency`` at once; the first error
        is raised once all have finished (none is left running behind the caller's back).
        Nested calls (from a pool thread) run inline, so the pool can never deadlock."""
        if len(items) <= 1 or getattr(_in_pool, "active", False):
            return [call(item) for item in items]

        def run(item: T) -> R:
            _in_pool.active = True
            return call(item)

        futures = [self._pool.submit(run, item) for item in items]
        wait(futures)
        return [future.result() for future in futures]

    def close(self) -> None:
        """Close the gRPC channel, if one was opened (the client has no public close).

        Commits still running in the pool are not waited for: at shutdown they may be the
        calls abandoned on a frozen store, and closing the channel is what ends them.
        """
        self._pool.shutdown(wait=False, cancel_futures=True)
        api = getattr(self.client, "_firestore_api_internal", None)
        transport = getattr(api, "transport", None)
        if transport is not None:
            with contextlib.suppress(Exception):
                transport.close()


if TYPE_CHECKING:

    def _conforms(store: FirestoreStore) -> Store:
        return store  # mypy checks FirestoreStore against the Store protocol here
