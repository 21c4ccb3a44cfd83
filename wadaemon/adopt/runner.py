"""``wadaemon adopt``: walk an account's legacy documents and put them right.

One account at a time, in three phases, each resumable from a checkpoint
(``wadaemon_adopt/{accountId}``: phase and the last thread id finished):

1. **account** — stale ``running`` states and abandoned lease fields cleared (``rules.account_fields``).
2. **threads** — every thread in document-id order. Its messages are conformed to docs/data-model.md
   (``rules.conform_message``) and, when the thread is not the person's canonical one (a LID
   with a known number, a raw or device JID, a ``redirectTo``), moved into the canonical
   thread, folding into a document already there. The optimistic outbound twin keyed by the
   old send path's request id is folded into (or re-keyed to) WhatsApp's id. A receipt-only
   document with no message is set aside in ``wadaemon_adopt_orphans``. Pages of 200 messages:
   memory holds one page, never an account's messages.
3. **summaries** — every thread's summary recomputed from its newest stored message where it
   names a time no message has (the old backend's placeholder ``now``), once all moves are done.

Why this is safe beside a running daemon and inbox: every write is preconditioned on the
version it was planned from (``wadaemon.store.legacy``); a refused commit re-reads its page and
plans again. Every rule depends on stored state alone, so replaying a unit after a crash, or
the whole run a second time, writes nothing new: a run killed anywhere and run again ends in
the state one uninterrupted run gives. A token bucket paces reads and writes so the inbox's own
queries are not starved.

Without ``--apply`` the same plan is made and counted, nothing is written; phase 3 then sees
the threads as they are before the moves of phase 2 (its counts are an estimate).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from typing import Any

import msgspec

from wadaemon.adopt import rules
from wadaemon.store.contract import Store, StoreError
from wadaemon.store.legacy import (
    Conflict,
    LegacyFirestore,
    RawDoc,
    RawWrite,
    account_path,
    checkpoint_path,
    lock_path,
    message_path,
    open_legacy,
    orphan_path,
    thread_path,
)

log = logging.getLogger("wadaemon.adopt")

PHASES = ("account", "threads", "summaries", "done")
#: Attempts at one unit whose commit kept being refused because the daemon changed it.
UNIT_ATTEMPTS = 8
#: Example document paths kept per kind of fix in the report.
SAMPLES = 3

#: Kinds of fix, in report order.
FIX_KINDS = (
    "clear_stale_account",
    "conform_message",
    "move_message",
    "fold_duplicate",
    "fold_outbound_twin",
    "rekey_outbound",
    "orphan_receipt",
    "merge_thread",
    "conform_thread",
    "fix_summary",
    "unfixable_message",
    "skipped_thread",
)


class AccountReport(msgspec.Struct, kw_only=True, rename="camel"):
    account_id: str
    applied: bool
    threads_scanned: int = 0
    messages_scanned: int = 0
    writes: int = 0
    conflicts: int = 0
    fixes: dict[str, int] = msgspec.field(default_factory=dict)
    samples: dict[str, list[str]] = msgspec.field(default_factory=dict)
    resumed_from: str = ""
    done: bool = False

    def absorb(self, part: AccountReport) -> None:
        """Add the counts of one unit's report (units run concurrently, each with its own)."""
        self.threads_scanned += part.threads_scanned
        self.messages_scanned += part.messages_scanned
        self.writes += part.writes
        self.conflicts += part.conflicts
        for kind, n in part.fixes.items():
            self.fixes[kind] = self.fixes.get(kind, 0) + n
            kept = self.samples.setdefault(kind, [])
            kept.extend(part.samples.get(kind, [])[: SAMPLES - len(kept)])

    def count(self, kind: str, path: str, n: int = 1) -> None:
        self.fixes[kind] = self.fixes.get(kind, 0) + n
        kept = self.samples.setdefault(kind, [])
        if len(kept) < SAMPLES:
            kept.append(path)


class Progress(msgspec.Struct, frozen=True, kw_only=True):
    account_id: str
    phase: str
    threads_done: int
    threads_total: int
    documents: int
    writes: int
    elapsed_s: float

    @property
    def eta_s(self) -> float | None:
        if self.threads_done <= 0 or self.threads_total <= 0:
            return None
        share = self.threads_done / self.threads_total
        # Phase 2 ("threads") is nearly all of the work; phase 3 reads one message per thread.
        done = share * 0.85 if self.phase == "threads" else 0.85 + share * 0.15
        return self.elapsed_s * (1 - done) / done if done > 0 else None


class TokenBucket:
    """At most ``rate`` operations per second on average, bursts up to one second's worth.
    Clock and sleep injected, so tests pace nothing."""

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.rate = rate
        self._clock, self._sleep = clock, sleep
        self._tokens = rate
        self._at = clock()
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        if self.rate <= 0 or n <= 0:
            return
        with self._lock:
            now = self._clock()
            self._tokens = min(self.rate, self._tokens + (now - self._at) * self.rate)
            self._at = now
            self._tokens -= n
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait:
            self._sleep(wait)


class Checkpoint(msgspec.Struct, kw_only=True, rename="camel"):
    phase: str = "account"
    cursor: str = ""


class Adopter:
    """Adopts accounts through a ``LegacyFirestore``. ``lid_map(account_id)`` gives the LID
    -> phone-number pairs the account's WhatsApp session knows."""

    def __init__(
        self,
        legacy: LegacyFirestore,
        *,
        apply: bool,
        lid_map: Callable[[str], Mapping[str, str]] = lambda _: {},
        rate: float = 500.0,
        page: int = 50,
        workers: int = 4,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        progress: Callable[[Progress], None] | None = None,
        commit_hook: Callable[[list[RawWrite]], None] | None = None,
    ) -> None:
        self.legacy = legacy
        self.apply = apply
        self._lid_map = lid_map
        self._bucket = TokenBucket(rate, clock=clock, sleep=sleep)
        self._page = page
        self._workers = max(1, workers)
        self._sleep = sleep
        self._now = now
        self._clock = clock
        self._progress = progress
        #: Called with each commit's writes before it is sent (tests kill a run there, or
        #: change a document under it as a running daemon would).
        self._commit_hook = commit_hook

    # -- plumbing ---------------------------------------------------------------------------
    def _commit(self, report: AccountReport, writes: list[RawWrite]) -> None:
        if not writes:
            return
        self._bucket.take(len(writes))
        report.writes += len(writes)
        if not self.apply:
            return
        if self._commit_hook is not None:
            self._commit_hook(writes)
        self.legacy.commit(writes)

    def _get(self, paths: list[str]) -> dict[str, RawDoc]:
        self._bucket.take(len(paths))
        return self.legacy.get(paths)

    def _save_checkpoint(self, account_id: str, checkpoint: Checkpoint, *, finished: bool = False) -> None:
        if not self.apply:
            return
        fields: dict[str, Any] = {"accountId": account_id, "phase": checkpoint.phase,
                                  "cursor": checkpoint.cursor, "updatedAt": self._now()}
        if finished:
            fields["finishedAt"] = self._now()
        self.legacy.commit([RawWrite(op="update", path=checkpoint_path(account_id), fields=fields)])

    def _load_checkpoint(self, account_id: str) -> Checkpoint:
        if not self.apply:
            return Checkpoint()
        doc = self.legacy.get([checkpoint_path(account_id)])[checkpoint_path(account_id)]
        if not doc.exists:
            return Checkpoint()
        return msgspec.convert(doc.fields, Checkpoint, strict=False)

    def _retrying(self, report: AccountReport, unit: Callable[[int], None]) -> None:
        """Run ``unit(attempt)`` until no commit of it is refused. Attempt 0 may plan from the
        snapshots it was handed; later attempts re-read everything."""
        for attempt in range(UNIT_ATTEMPTS):
            try:
                unit(attempt)
                return
            except Conflict:
                report.conflicts += 1
                self._sleep(0.02 * report.conflicts)
                log.info("[adopt] accountId=%s a document changed while adopting it: re-reading", report.account_id)
        raise StoreError(f"adopt {report.account_id}: documents kept changing under {UNIT_ATTEMPTS} attempts")

    # -- the run ----------------------------------------------------------------------------
    def adopt_account(self, account_id: str) -> AccountReport:
        report = AccountReport(account_id=account_id, applied=self.apply)
        checkpoint = self._load_checkpoint(account_id)
        if checkpoint.phase == "done":
            report.done = True
            report.resumed_from = "done"
            return report
        if checkpoint.phase != "account" or checkpoint.cursor:
            report.resumed_from = f"{checkpoint.phase}:{checkpoint.cursor}"
        started = self._clock()
        total = self.legacy.count_threads(account_id)
        lid_map = dict(self._lid_map(account_id))
        if checkpoint.phase == "account":
            self._retrying(report, lambda _: self._adopt_account_doc(report, account_id))
            checkpoint = Checkpoint(phase="threads")
            self._save_checkpoint(account_id, checkpoint)
        for phase in ("threads", "summaries"):
            if checkpoint.phase != phase:
                continue
            done = 0
            with ThreadPoolExecutor(self._workers, thread_name_prefix="adopt") as pool:
                for page in self.legacy.threads(account_id, after=checkpoint.cursor, page=self._page):
                    self._bucket.take(len(page))
                    work = partial(self._unit, phase, account_id, lid_map)
                    for part in pool.map(work, page):
                        report.absorb(part)
                        done += 1
                        if self._progress is not None:
                            self._progress(Progress(
                                account_id=account_id, phase=phase, threads_done=done, threads_total=total,
                                documents=report.messages_scanned + report.threads_scanned,
                                writes=report.writes, elapsed_s=self._clock() - started))
                    checkpoint = Checkpoint(phase=phase, cursor=page[-1].path.rsplit("/", 1)[1])
                    self._save_checkpoint(account_id, checkpoint)
            checkpoint = Checkpoint(phase=PHASES[PHASES.index(phase) + 1])
            self._save_checkpoint(account_id, checkpoint, finished=checkpoint.phase == "done")
        report.done = True
        return report

    def _unit(self, phase: str, account_id: str, lid_map: Mapping[str, str], thread: RawDoc) -> AccountReport:
        """One thread's work in ``phase``, counted in a report of its own."""
        part = AccountReport(account_id=account_id, applied=self.apply)
        if phase == "threads":
            part.threads_scanned = 1
            self._adopt_thread(part, account_id, thread, lid_map)
        else:
            self._retrying(part, lambda attempt: self._fix_summary(part, thread, reread=attempt > 0))
        return part

    # -- phase 1 ----------------------------------------------------------------------------
    def _adopt_account_doc(self, report: AccountReport, account_id: str) -> None:
        docs = self._get([account_path(account_id), lock_path(account_id)])
        account, lock = docs[account_path(account_id)], docs[lock_path(account_id)]
        if not account.exists:
            return
        after = rules.account_fields(account.fields, lock=lock.fields if lock.exists else None, now=self._now())
        change = rules.delta(account.fields, after)
        if change:
            report.count("clear_stale_account", account.path)
            self._commit(report, [RawWrite(op="update", path=account.path, fields=change.fields,
                                           deleted=change.deleted, expect=account.version)])

    # -- phase 2 ----------------------------------------------------------------------------
    def _adopt_thread(self, report: AccountReport, account_id: str, thread: RawDoc, lid_map: Mapping[str, str]) -> None:
        """One thread, as one unit: a refused commit re-plans the whole thread (what already
        landed plans to nothing, so a retry costs reads only)."""
        thread_id = thread.id
        target_jid = rules.canonical_jid(account_id, thread_id, thread.fields, lid_map)
        if "@" not in target_jid:
            report.count("skipped_thread", thread.path)
            log.warning("[adopt] accountId=%s thread %s has no chat JID: left as it is", account_id, thread.path)
            return
        target_tid = f"{account_id}__{target_jid}"

        def unit(attempt: int) -> None:
            for page in self.legacy.messages(thread.path, page=self._page):
                self._bucket.take(len(page))
                report.messages_scanned += len(page)
                self._adopt_messages(report, account_id, page, thread_id, target_tid, target_jid)
            if target_tid != thread_id:
                own_jid = rules.jid_of_thread_id(account_id, thread_id)
                self._merge_thread_doc(report, account_id, thread.path, own_jid, target_tid, target_jid)
            else:
                self._conform_thread_doc(report, account_id, thread, target_jid, reread=attempt > 0)

        self._retrying(report, unit)

    def _adopt_messages(
        self, report: AccountReport, account_id: str, page: list[RawDoc],
        thread_id: str, target_tid: str, target_jid: str,
    ) -> None:
        """One page of a thread's messages — conformed, moved, twins folded, orphans set aside —
        as one atomic commit (at most two writes per message: under 500 for a page of 200).

        The page is planned as a set of document states (``after``: path -> fields, or None for
        deleted) so that two documents of one message in the same page fold into one write."""
        plans: list[tuple[RawDoc, str]] = []
        for doc in page:
            twin = rules.outbound_twin_id(doc.fields, doc.id) if rules.message_time(doc.fields) else ""
            plans.append((doc, message_path(target_tid, twin or doc.id)))
        known: dict[str, RawDoc] = {doc.path: doc for doc in page}
        missing = [dest for _, dest in plans if dest not in known]
        known.update(self._get(missing))
        after: dict[str, dict[str, Any] | None] = {}

        def current(path: str) -> dict[str, Any] | None:
            return after[path] if path in after else (known[path].fields if known[path].exists else None)

        for doc, dest in plans:
            fields = current(doc.path)
            if fields is None:  # already folded into its twin earlier in this page
                continue
            final_id = doc.id
            conformed = rules.conform_message(fields, message_id=doc.id, account_id=account_id, client_jid=target_jid)
            if conformed is None and not rules.is_orphan_receipt(fields):
                report.count("unfixable_message", doc.path)
                continue
            if dest == doc.path:
                assert conformed is not None
                if rules.delta(fields, conformed):
                    report.count("conform_message", doc.path)
                after[doc.path] = conformed
                continue
            there = current(dest)
            after[doc.path] = None
            if conformed is None:  # a receipt with no message of its own
                if there is not None:
                    report.count("fold_duplicate", doc.path)
                    after[dest] = rules.fold_into(there, fields)
                else:
                    report.count("orphan_receipt", doc.path)
                    orphan = orphan_path(account_id, target_tid, doc.id)
                    known.setdefault(orphan, RawDoc(path=orphan, fields={}))
                    after[orphan] = {**fields, "adoptOriginalPath": doc.path, "adoptSetAsideAt": self._now()}
                continue
            rekeyed = dest != message_path(target_tid, doc.id)
            if rekeyed:
                wa_id = rules.outbound_twin_id(fields, doc.id)
                conformed = {**conformed, "id": wa_id, "waMessageId": wa_id,
                             "clientMessageId": conformed.get("clientMessageId") or doc.id,
                             rules.REKEYED_FROM: doc.id}
                final_id = wa_id
            kind = ("fold_outbound_twin" if there is not None else "rekey_outbound") if rekeyed else (
                "fold_duplicate" if there is not None else "move_message")
            report.count(kind, doc.path)
            if there is None:
                after[dest] = conformed
            else:
                merged = rules.conform_message(rules.fold_twins(there, conformed), message_id=final_id,
                                               account_id=account_id, client_jid=target_jid)
                assert merged is not None  # both have a time
                after[dest] = merged
        writes: list[RawWrite] = []
        for path, fields in after.items():
            before = known[path]
            if fields is None:
                if before.exists:
                    writes.append(RawWrite(op="delete", path=path, expect=before.version))
            elif not before.exists:
                writes.append(RawWrite(op="create", path=path, fields=fields))
            else:
                change = rules.delta(before.fields, fields)
                if change:
                    writes.append(RawWrite(op="update", path=path, fields=change.fields,
                                           deleted=change.deleted, expect=before.version))
        self._commit(report, writes)

    def _merge_thread_doc(self, report: AccountReport, account_id: str, source_path: str,
                          source_jid: str, target_tid: str, target_jid: str) -> None:
        docs = self._get([source_path, thread_path(target_tid)])
        source, target = docs[source_path], docs[thread_path(target_tid)]
        if not source.exists:
            return
        if self.apply and next(iter(self.legacy.messages(source_path, page=1)), []):
            # The daemon wrote a message into it meanwhile: re-plan the thread (moves it too).
            raise Conflict(f"{source_path} gained messages while being merged")
        base = target.fields if target.exists else {
            k: v for k, v in source.fields.items() if k not in rules.LEGACY_THREAD_MARKERS}
        after = rules.conform_thread(base, account_id=account_id, client_jid=target_jid)
        if rules.known_name(source.fields) and (not target.exists or not rules.known_name(target.fields)):
            after["displayName"] = rules.known_name(source.fields)
        for alias in [*source.fields.get("aliasJids", []), source_jid]:
            if isinstance(alias, str) and alias and rules.clean_jid(alias) != target_jid:
                after = rules.with_alias(after, alias)
        writes: list[RawWrite] = []
        if target.exists:
            change = rules.delta(target.fields, after)
            if change:
                writes.append(RawWrite(op="update", path=target.path, fields=change.fields,
                                       deleted=change.deleted, expect=target.version))
        else:
            writes.append(RawWrite(op="create", path=target.path, fields=after))
        writes.append(RawWrite(op="delete", path=source.path, expect=source.version))
        report.count("merge_thread", source.path)
        self._commit(report, writes)

    def _conform_thread_doc(self, report: AccountReport, account_id: str, thread: RawDoc, jid: str, *,
                            reread: bool) -> None:
        path = thread.path
        doc = self._get([path])[path] if reread else thread
        if not doc.exists:
            return
        change = rules.delta(doc.fields, rules.conform_thread(doc.fields, account_id=account_id, client_jid=jid))
        if change:
            report.count("conform_thread", path)
            self._commit(report, [RawWrite(op="update", path=path, fields=change.fields,
                                           deleted=change.deleted, expect=doc.version)])

    # -- phase 3 ----------------------------------------------------------------------------
    def _fix_summary(self, report: AccountReport, thread: RawDoc, *, reread: bool) -> None:
        current = self._get([thread.path])[thread.path] if reread else thread
        if not current.exists:
            return
        newest = self.legacy.newest_messages(thread.path, limit=1)
        self._bucket.take(1)
        after = rules.summary_fields(current.fields, newest[0].fields if newest else None)
        change = rules.delta(current.fields, after)
        if change:
            report.count("fix_summary", thread.path)
            self._commit(report, [RawWrite(op="update", path=thread.path, fields=change.fields,
                                           deleted=change.deleted, expect=current.version)])


def legacy_reasons(legacy: LegacyFirestore, account_id: str, *, sample: int = 50) -> list[str]:
    """Why ``account_id`` looks unadopted (empty when it does not): old-layout fields on the
    account or on its first ``sample`` threads, and no finished adoption. Cheap: a few reads,
    done once per account at start-up."""
    docs = legacy.get([checkpoint_path(account_id), account_path(account_id)])
    checkpoint = docs[checkpoint_path(account_id)]
    if checkpoint.exists and checkpoint.fields.get("phase") == "done":
        return []
    reasons = [f"accounts.{name}" for name in rules.LEGACY_ACCOUNT_MARKERS
               if name in docs[account_path(account_id)].fields]
    first = next(iter(legacy.threads(account_id, page=sample)), [])
    found = sorted({name for thread in first for name in rules.LEGACY_THREAD_MARKERS if name in thread.fields})
    reasons.extend(f"threads.{name}" for name in found)
    return reasons


def warn_if_unadopted(store: Store, account_ids: Iterable[str]) -> int:
    """At start-up: one warning per account whose documents the old backend wrote and that
    was never adopted, saying how to adopt it. Returns how many were found; never raises
    (a store that cannot answer now is the daemon's business, not this hint's)."""
    legacy = open_legacy(store)
    if legacy is None:
        return 0
    found = 0
    try:
        for account_id in sorted({*account_ids, *legacy.account_ids()}):
            reasons = legacy_reasons(legacy, account_id)
            if reasons:
                found += 1
                log.warning("[adopt] accountId=%s documents written by the old backend found (%s): run "
                            "`wadaemon adopt --account %s` to see what would change, then again with --apply",
                            account_id, ", ".join(reasons), account_id)
    except StoreError as exc:
        log.info("[adopt] legacy check skipped: %s", exc)
    return found


def format_report(reports: Iterable[AccountReport]) -> str:
    lines: list[str] = []
    for r in reports:
        mode = "applied" if r.applied else "dry run (nothing written)"
        lines.append(f"account {r.account_id}: {mode}; threads scanned {r.threads_scanned}, "
                     f"messages scanned {r.messages_scanned}, writes {r.writes}, conflicts {r.conflicts}"
                     + (f", resumed from {r.resumed_from}" if r.resumed_from else ""))
        for kind in FIX_KINDS:
            n = r.fixes.get(kind, 0)
            if n:
                lines.append(f"  {kind:<20} {n:>7}   e.g. {', '.join(r.samples.get(kind, []))}")
        if not any(r.fixes.values()):
            lines.append("  nothing to change")
    return "\n".join(lines)
