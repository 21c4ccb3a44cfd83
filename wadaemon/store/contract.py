"""The store contract: the narrow, domain-level interface every adapter implements.

Why synchronous? Both backends are blocking libraries (google-cloud-firestore's sync client
over gRPC, stdlib sqlite3). Keeping the contract blocking keeps the adapters plain and lets one
contract test suite drive both without an event loop. Trio code reaches the store only through
``wadaemon.store.runner.StoreRunner``, which runs each call in a worker thread; the HTTP thread
calls it directly.

Semantics every adapter must honour (the contract tests in ``tests/store/`` check each one):

* **Messages are idempotent by id.** ``upsert_messages`` merges; ``createdAt``, ``tsServer``,
  ``syncSource`` and ``syncedAt`` are set by the first write and never rewritten; ``status`` only
  moves forward; a replay that would change nothing writes nothing. The per-document rules live
  in ``wadaemon.store.merge`` so that both adapters apply the *same* rules.
* **Thread summaries only move forward in time** (``advance_threads``).
* **Receipts are monotonic** and a receipt for a message that is not stored yet is *returned*
  to the caller (who keeps it and retries once the message lands), never dropped.
* **Account patches** write exactly the fields of the ``AccountDoc`` that are not None, each
  replaced whole, without touching sibling fields.
* **Leases** are compare-and-swap: an expired or absent lease may be taken by anyone; renew and
  release succeed only for the current holder (owner and, for account leases, fencing epoch).
  The rules are ``wadaemon.store.leases``, shared by every adapter. ``renew_leases`` renews an
  instance's leases together, each judged on its own (one lost lease does not fail the others).
* **Batches**: adapters split writes into commits of at most 500 writes.
* **Single writer per account**: callers serialise writes for one account (the account's actors
  share one lane, see ``StoreRunner``); adapters need not guard read-modify-write races within
  an account. Different accounts may be written concurrently.

Errors: any backend failure raises ``StoreUnavailable`` (retryable: outage, timeout, contention)
or ``StoreError`` (a bug or bad data). Nothing backend-specific escapes an adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

import msgspec

from wadaemon.domain import (
    AccountDoc,
    InstanceDoc,
    Lease,
    MessageDoc,
    MessageMutation,
    MessageStatus,
    ReceiptUpdate,
    ThreadDoc,
    ThreadPatch,
    ThreadSummary,
)

#: ``account``: ``whatsapp_account_leases/{accountId}`` (who runs the socket);
#: ``backfill``: ``whatsapp_backfill_locks/{accountId}``, mirrored to ``accounts/*.autoBackfillLease*``;
#: ``recent_sync``: the ``recentSyncLease*`` fields on ``accounts/{accountId}``.
LeaseKind = Literal["account", "backfill", "recent_sync"]

MessageOrder = Literal["asc", "desc"]


class StoreError(Exception):
    """A store operation failed for a reason retrying will not fix."""


class StoreUnavailable(StoreError):
    """The backend is unreachable, timing out or contended: retry later, nothing was lost."""


class PageKey(msgspec.Struct, frozen=True):
    """Where a page ended: the sort value and the id of its last item. The next page starts
    strictly after it in the same order (keyset paging): items written meanwhile never shift
    a page, so pages have no gaps and no repeats. ``ms`` is ``tsClientMs`` for messages and
    ``lastMessageAtMs`` for threads (None for a thread without it: those come last, by id);
    ``id`` is the message id or the thread id. Ties on ``ms`` are broken by document id."""

    ms: int | None
    id: str


class UpsertResult(msgspec.Struct, frozen=True):
    written: int
    unchanged: int
    commits: int


class Store(Protocol):
    """See the module docstring for the rules every method follows."""

    backend: str

    # -- messages ----------------------------------------------------------------------------
    def upsert_messages(self, docs: Sequence[MessageDoc]) -> UpsertResult:
        """Merge message documents by (threadId, id). ``createdAt``/``tsServer``/``updatedAt``
        left None are stamped by the store."""
        ...

    def apply_receipts(self, receipts: Sequence[ReceiptUpdate]) -> list[ReceiptUpdate]:
        """Move statuses forward; returns the receipts whose message is not stored (yet)."""
        ...

    def apply_mutations(self, mutations: Sequence[MessageMutation]) -> list[MessageMutation]:
        """Apply edits, revokes and reactions; returns those whose target is not stored (yet)."""
        ...

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
        """Settle a message we queued as ``local_id``: on success re-key it to WhatsApp's id
        (merging with any echo already stored there, one document in the end) with ``status``;
        on failure (``wa_message_id == ""``) mark the queued document ``failed``."""
        ...

    def get_message(self, thread_id: str, message_id: str) -> MessageDoc | None: ...

    def list_messages(
        self, thread_id: str, *, limit: int, order: MessageOrder = "desc",
        after: PageKey | None = None,
    ) -> list[MessageDoc]:
        """Messages of a thread ordered by ``tsClientMs`` (ties by id), starting after ``after``."""
        ...

    def oldest_message(self, thread_id: str) -> MessageDoc | None: ...

    def newest_message(self, thread_id: str) -> MessageDoc | None: ...

    def first_message_since(self, thread_id: str, ts_ms: int) -> MessageDoc | None:
        """The oldest message with ``tsClientMs >= ts_ms`` (recent-sync's anchor after a gap)."""
        ...

    # -- threads -----------------------------------------------------------------------------
    def advance_threads(self, summaries: Sequence[ThreadSummary]) -> int:
        """Create threads as needed and move their summaries forward only. Several summaries
        for one thread in a call are folded first. Returns documents written."""
        ...

    def merge_threads(self, account_id: str, from_jid: str, into_jid: str) -> int:
        """Move every message of thread ``from_jid`` into thread ``into_jid`` (docs/data-model.md, identity), fold
        the summaries, add ``from_jid`` to ``aliasJids`` and delete the old thread. Returns
        messages moved. Idempotent: a second call moves nothing."""
        ...

    def patch_threads(self, patches: Sequence[ThreadPatch]) -> int:
        """Apply ``merge.patch_thread`` to each *existing* thread (absent ones are skipped,
        never created). Returns documents written."""
        ...

    def get_thread(self, thread_id: str) -> ThreadDoc | None: ...

    def list_threads(self, account_id: str, *, limit: int, after: PageKey | None = None) -> list[ThreadDoc]:
        """Threads of an account, newest ``lastMessageAtMs`` first (ties by id, descending),
        those without it last (by id, ascending); starting after ``after``."""
        ...

    def find_thread(self, account_id: str, jid: str) -> ThreadDoc | None:
        """The account's thread whose ``clientJid`` is ``jid``, or that lists it in
        ``aliasJids`` (a LID merged into its phone-number thread still finds it)."""
        ...

    def threads_missing_last_message(self, account_id: str, *, limit: int) -> list[ThreadDoc]:
        """Threads with no ``lastMessageAtMs`` (what thread repair and ``[schema-guard]`` look for)."""
        ...

    # -- accounts ----------------------------------------------------------------------------
    def update_account(self, account_id: str, patch: AccountDoc) -> None:
        """Write the non-None fields of ``patch``, each whole; ``updatedAt`` is stamped."""
        ...

    def get_account(self, account_id: str) -> AccountDoc | None: ...

    def list_account_ids(self) -> list[str]: ...

    # -- leases ------------------------------------------------------------------------------
    def acquire_lease(
        self, kind: LeaseKind, key: str, owner_id: str, *, ttl_ms: int, now_ms: int
    ) -> Lease | None:
        """Take the lease if absent, expired or already ours (then it is extended)."""
        ...

    def renew_lease(self, lease: Lease, *, ttl_ms: int, now_ms: int) -> Lease | None:
        """Extend a lease we hold; None when it is no longer ours (stop the guarded work)."""
        ...

    def release_lease(self, lease: Lease) -> bool:
        """Give the lease up if we still hold it."""
        ...

    def renew_leases(self, held: Sequence[Lease], *, ttl_ms: int, now_ms: int) -> list[Lease | None]:
        """``renew_lease`` for each, in one round of store calls; results in the same order.
        Raises ``StoreUnavailable`` when the round as a whole failed (nothing is known)."""
        ...

    def read_lease(self, kind: LeaseKind, key: str) -> Lease | None: ...

    def list_account_leases(self) -> list[Lease]:
        """Every held (not released) account lease, expired or not, by account id."""
        ...

    # -- instances (``whatsapp_instances/{instanceId}``) ------------------------------------
    def put_instance(self, doc: InstanceDoc) -> None:
        """Write an instance's heartbeat document whole."""
        ...

    def list_instances(self) -> list[InstanceDoc]: ...

    def delete_instance(self, instance_id: str) -> None: ...

    # -- lifecycle ---------------------------------------------------------------------------
    def ping(self) -> bool:
        """Cheap reachability check for /health and /diag; never raises."""
        ...

    def close(self) -> None: ...
