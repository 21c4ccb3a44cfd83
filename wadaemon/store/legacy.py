"""Raw document access for adopting a database the old Node backend wrote (``wadaemon adopt``).

The store contract speaks typed documents, and a legacy document often does not decode into
one (``tsClient`` as a string, no ``tsClientMs``, ``messageType: unknown``): that is exactly
what adoption repairs. So adoption works on *raw field maps* and needs an adapter of its own,
kept here so that Firestore calls still never leave ``wadaemon.store``. The decisions (what a
document should become) are pure functions in ``wadaemon.adopt.rules``; this module only reads
pages and commits writes.

Why every write carries a precondition: adoption runs beside a live daemon and inbox. Each
write names the ``update_time`` of the snapshot it was planned from (or "must not exist" for
a create); if anything changed the document meanwhile, the whole commit is refused with
``Conflict`` and the caller re-reads and re-plans that unit instead of overwriting newer data.
Commits are atomic and hold at most 500 writes, so a unit is applied whole or not at all.

Only Firestore: the legacy data only ever lived there. ``open_legacy`` returns None for the
embedded store (there is nothing to adopt).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, Literal

import msgspec
from google.api_core import exceptions as gexc
from google.cloud.firestore_v1 import DELETE_FIELD, FieldFilter
from google.cloud.firestore_v1.field_path import FieldPath

from wadaemon.store.contract import Store, StoreError
from wadaemon.store.encoding import escape_doc_id, unescape_doc_id
from wadaemon.store.firestore import (
    ACCOUNTS,
    MAX_BATCH_WRITES,
    MESSAGES,
    THREADS,
    FirestoreStore,
    _plain,
)
from wadaemon.store.leases import BACKFILL_LOCKS

#: Collection of adoption checkpoints, one document per account.
CHECKPOINTS = "wadaemon_adopt"
#: Where receipt-only documents without a message go (kept, out of the inbox's way).
ORPHANS = "wadaemon_adopt_orphans"


#: What a commit whose precondition failed answers (the emulator and production differ).
_REFUSED = (gexc.FailedPrecondition, gexc.Conflict, gexc.AlreadyExists, gexc.NotFound)


class Conflict(Exception):
    """A precondition failed: a document changed since it was read. Re-read and re-plan."""


class RawDoc(msgspec.Struct, frozen=True):
    """A document as stored. ``path`` is relative to the database root with *stored* (escaped)
    ids, e.g. ``threads/acc__4071@s.whatsapp.net/messages/3EB0``; ``version`` is the opaque
    update time a write preconditions on (None: the document does not exist)."""

    path: str
    fields: dict[str, Any]
    version: Any = None

    @property
    def id(self) -> str:
        return unescape_doc_id(self.path.rsplit("/", 1)[1])

    @property
    def exists(self) -> bool:
        return self.version is not None


class RawWrite(msgspec.Struct, frozen=True, kw_only=True):
    """One write of a unit. ``update``: set ``fields`` and delete ``deleted`` on the document
    read at ``expect`` (it must still be that version); ``create``: the document must not exist;
    ``delete``: the document must still be at ``expect``."""

    op: Literal["update", "create", "delete"]
    path: str
    fields: dict[str, Any] = msgspec.field(default_factory=dict)
    deleted: tuple[str, ...] = ()
    expect: Any = None


def thread_path(thread_id: str) -> str:
    return f"{THREADS}/{escape_doc_id(thread_id)}"


def message_path(thread_id: str, message_id: str) -> str:
    return f"{thread_path(thread_id)}/{MESSAGES}/{escape_doc_id(message_id)}"


def account_path(account_id: str) -> str:
    return f"{ACCOUNTS}/{escape_doc_id(account_id)}"


def checkpoint_path(account_id: str) -> str:
    return f"{CHECKPOINTS}/{escape_doc_id(account_id)}"


def orphan_path(account_id: str, thread_id: str, message_id: str) -> str:
    return f"{ORPHANS}/{escape_doc_id(f'{thread_id}__{message_id}')}"


def lock_path(account_id: str) -> str:
    return f"{BACKFILL_LOCKS}/{escape_doc_id(account_id)}"


class LegacyFirestore:
    """Pages of raw documents and preconditioned atomic commits over a ``FirestoreStore``'s
    client (its deadlines and retry budget apply; errors map to ``StoreUnavailable`` /
    ``StoreError`` as everywhere in the store)."""

    def __init__(self, store: FirestoreStore) -> None:
        self._store = store
        self._client = store.client
        #: Writes committed and documents read, for the report and the bench.
        self.writes = 0
        self.reads = 0

    def _ref(self, path: str) -> Any:
        return self._client.document(path)

    def _raw(self, snap: Any) -> RawDoc:
        path = snap.reference.path
        if not snap.exists:
            return RawDoc(path=path, fields={})
        return RawDoc(path=path, fields=_plain(snap.to_dict() or {}), version=snap.update_time)

    def account_ids(self) -> list[str]:
        """Accounts with an ``accounts/*`` document or a checkpoint."""
        with self._store._errors("legacy account_ids"):
            ids = {unescape_doc_id(s.id) for s in self._client.collection(ACCOUNTS).select([]).stream(**self._store.rpc)}
        ids.discard("wadaemon-ping")
        return sorted(ids)

    def count_threads(self, account_id: str) -> int:
        """How many threads the account has (one aggregation query: for the time estimate)."""
        with self._store._errors("legacy count"):
            query = self._client.collection(THREADS).where(filter=FieldFilter("accountId", "==", account_id))
            result = query.count().get(**self._store.rpc)
        return int(result[0][0].value) if result and result[0] else 0

    def get(self, paths: Sequence[str]) -> dict[str, RawDoc]:
        """The documents at ``paths`` (absent ones with ``exists == False``)."""
        if not paths:
            return {}
        with self._store._errors("legacy get"):
            found: dict[str, RawDoc] = {}
            unique = list(dict.fromkeys(paths))
            for start in range(0, len(unique), 300):
                refs = [self._ref(p) for p in unique[start : start + 300]]
                for snap in self._client.get_all(refs, **self._store.rpc):
                    found[snap.reference.path] = self._raw(snap)
            self.reads += len(found)
            return {p: found.get(p, RawDoc(path=p, fields={})) for p in paths}

    def threads(self, account_id: str, *, after: str = "", page: int = 200) -> Iterator[list[RawDoc]]:
        """The account's threads in document-id order, a page at a time, starting after the
        stored thread id ``after`` (a checkpoint). Streams: one page in memory.

        Listed by id prefix (``{accountId}__``) rather than queried by ``accountId``, because the
        old receipt path wrote message documents under thread ids whose thread document was
        never created; only a listing shows those (as documents that do not exist)."""
        prefix = escape_doc_id(f"{account_id}__")
        with self._store._errors("legacy threads"):
            refs = self._client.collection(THREADS).list_documents(page_size=1000)
            chunk: list[Any] = []
            for ref in refs:
                if not ref.id.startswith(prefix) or ref.id <= after:
                    continue
                chunk.append(ref)
                if len(chunk) == page:
                    yield self._snapshots(chunk)
                    chunk = []
            if chunk:
                yield self._snapshots(chunk)

    def _snapshots(self, refs: list[Any]) -> list[RawDoc]:
        found = {snap.reference.path: self._raw(snap) for snap in self._client.get_all(refs, **self._store.rpc)}
        self.reads += len(refs)
        return [found.get(ref.path, RawDoc(path=ref.path, fields={})) for ref in refs]

    def messages(self, thread_doc_path: str, *, page: int = 200) -> Iterator[list[RawDoc]]:
        """A thread's messages in document-id order, a page at a time."""
        cursor: Any = None
        while True:
            with self._store._errors("legacy messages"):
                query = self._ref(thread_doc_path).collection(MESSAGES).order_by(FieldPath.document_id()).limit(page)
                if cursor is not None:
                    query = query.start_after(cursor)
                snaps = list(query.stream(**self._store.rpc))
            self.reads += len(snaps)
            if not snaps:
                return
            yield [self._raw(s) for s in snaps]
            cursor = snaps[-1]
            if len(snaps) < page:
                return

    def newest_messages(self, thread_doc_path: str, *, limit: int) -> list[RawDoc]:
        """The newest messages by ``tsClientMs`` (adopted messages all have it)."""
        with self._store._errors("legacy newest"):
            query = (
                self._ref(thread_doc_path).collection(MESSAGES)
                .order_by("tsClientMs", direction="DESCENDING").limit(limit)
            )
            docs = [self._raw(s) for s in query.stream(**self._store.rpc)]
        self.reads += len(docs)
        return docs

    def commit(self, writes: Sequence[RawWrite]) -> None:
        """Apply ``writes`` atomically (at most 500). Raises ``Conflict`` when any
        precondition failed: then nothing was written."""
        if not writes:
            return
        if len(writes) > MAX_BATCH_WRITES:
            raise StoreError(f"a unit of {len(writes)} writes exceeds one commit ({MAX_BATCH_WRITES})")
        batch = self._client.batch()
        for w in writes:
            ref = self._ref(w.path)
            if w.op == "create":
                batch.create(ref, w.fields)
            elif w.op == "delete":
                option = self._client.write_option(last_update_time=w.expect) if w.expect is not None else None
                batch.delete(ref, option=option)
            else:
                if w.expect is None:
                    merge_names = [FieldPath(k).to_api_repr() for k in (*w.fields, *w.deleted)]
                    values = {**w.fields, **dict.fromkeys(w.deleted, DELETE_FIELD)}
                    batch.set(ref, values, merge=merge_names)
                else:
                    patch: dict[str, Any] = {FieldPath(k).to_api_repr(): v for k, v in w.fields.items()}
                    patch.update({FieldPath(k).to_api_repr(): DELETE_FIELD for k in w.deleted})
                    batch.update(ref, patch, option=self._client.write_option(last_update_time=w.expect))
        refused: Exception | None = None
        with self._store._errors("legacy commit"):
            try:
                batch.commit(**self._store.rpc_once)
            except _REFUSED as exc:
                refused = exc
        if refused is not None:
            raise Conflict(str(refused)) from refused
        self.writes += len(writes)


def open_legacy(store: Store) -> LegacyFirestore | None:
    """The legacy view of ``store``, or None when the store is not Firestore."""
    if isinstance(store, FirestoreStore):
        return LegacyFirestore(store)
    return None


def as_datetime(value: Any) -> datetime | None:
    return value if isinstance(value, datetime) else None
