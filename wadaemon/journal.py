"""The durable ingest journal: every raw WhatsApp event is on disk before its hand-over completes.

whatsmeow acknowledges a message to WhatsApp when neonize queues it, before Python sees it
(docs/whatsapp.md), so from that moment the only copy is ours. ``Journal.append`` — called by
the transport on its own (Go) thread — returns only once the event is committed to a local
SQLite file, one per account (``{data}/journal/{account}.sqlite``). The trio side reads entries
through a ``JournalReader``, writes them to the store, and marks them done; done entries are
deleted (the journal is a queue, not an archive). Whatever is still there at start is replayed,
so a crash or a store outage loses nothing. An entry is done only after its writes committed,
so a replay can repeat writes that landed just before a crash: the store writes must be
idempotent (keyed by message id) for that to duplicate nothing (docs/architecture.md).

Durability level. SQLite in WAL mode with ``synchronous=NORMAL`` makes a commit durable across
a *process* crash (SIGKILL, OOM kill): the WAL frame is written to the OS before COMMIT returns,
it is just not fsynced. Across a *power loss or kernel crash* a NORMAL commit may roll back,
losing every event since the last checkpoint. ``synchronous=FULL`` fsyncs the WAL on every
commit and closes that hole, at the price of one fsync per event. The default is FULL: the
transport hands events over one at a time from a single thread (neonize runs handlers one at a
time), so no group commit can amortise the fsync, but WhatsApp traffic is tens of events per
second and a history-sync chunk (thousands of messages) is one event, so even a slow disk's few
hundred fsyncs per second keep up. Measured on the dev VM (ext4, 600-byte events, one thread):
NORMAL ~27-38k appends/s, FULL ~5.4-6.4k appends/s; 1 MB events ~200-300/s either way (bandwidth
bound). ``synchronous="NORMAL"`` is there for disks where fsync is pathologically slow; it still
survives every process crash.

Backpressure. The backlog (entries not yet done) is bounded by ``max_backlog``: at the bound
``append`` blocks the calling thread until entries are marked done. Blocking neonize's handler
thread is exactly the backpressure whatsmeow expects; dropping would lose acknowledged messages.
``close`` turns a blocked (or later) ``append`` into ``JournalClosed`` so shutdown never hangs.

Dead letters. An entry whose content the store refuses for good (a ``StoreError`` that is not
``StoreUnavailable``: an id the backend cannot hold, a value it rejects) would otherwise be
replayed after every pipeline restart, forever, and nothing behind it would land. The actors
isolate such an entry and ``set_aside`` it: in one transaction it moves from ``entries`` to
``dead_letters`` with the error and the time, in the same file, so it is as durable as before
and never deleted by us. ``wadaemon deadletter list ACCOUNT`` shows them; ``wadaemon deadletter
replay ACCOUNT`` (``restore_dead_letters``) puts them back in the queue, once the cause is
fixed, with fresh seqs (at the end: they are late, and writes are idempotent anyway).

History totals. ``historySyncCount`` and ``lastHistorySyncResult`` are cumulative per pairing,
across restarts and replays. A restart must not start them from zero, and a chunk replayed
after a crash (its entry not yet done) must not count twice, so the totals live here, beside
the entries they count: ``count_history(seq, delta)`` adds a chunk's counts once per seq (a
``history_counted`` row remembers it until the entry is done, deleted in the same transaction
as the entry), atomically with that memory. A fresh journal is seeded from the account
document in the store (the durable copy the totals are posted to); a new pairing resets them.

Damage. A journal file can be damaged behind our back: unreadable (``JournalCorrupt`` at
open), or silently short — truncated to zero, its WAL deleted or overwritten (SQLite then opens
the last checkpoint without a word, and every event since is gone). To notice the second kind, a
*watermark* file beside the journal (``{account}.seq``) records the highest seq appended and the
last time the backlog was empty; it is rewritten in place after every append (no fsync: it only
has to survive what the journal survives, and it is written after the journal's commit, so it
never runs ahead of a healthy journal). At open, a journal whose highest seq is below the
watermark has lost entries: ``Journal.loss`` describes it (how many seqs, and the span of time
they can come from: after the backlog was last empty), the owner reports it, and the watermark is
reset to the journal as it now is. ``quarantine`` moves an unreadable journal aside (never
deletes it: its events may exist nowhere else) so a fresh one can start.

Threads. ``append`` runs on a foreign thread, readers run in trio worker threads; all writes go
through one connection under one lock (SQLite serialises writers anyway, so a second writing
connection would only add busy-waiting), reads use a second connection, which WAL lets run
beside the writer.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Literal

import msgspec
import trio

from wadaemon.whatsapp.transport import RawEvent

log = logging.getLogger("wadaemon.journal")

Synchronous = Literal["NORMAL", "FULL"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    data BLOB NOT NULL,
    received_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS history_totals (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    chunks INTEGER NOT NULL, saved INTEGER NOT NULL, skipped INTEGER NOT NULL,
    errors INTEGER NOT NULL, total INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS history_counted (seq INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS dead_letters (
    seq INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    data BLOB NOT NULL,
    received_ms INTEGER NOT NULL,
    error TEXT NOT NULL,
    set_aside_ms INTEGER NOT NULL
);
"""

DEFAULT_BATCH_BYTES = 16 * 1024 * 1024

# SQLITE_CORRUPT, SQLITE_NOTADB (primary codes; extended codes carry them in the low byte).
_CORRUPT_CODES = frozenset({11, 26})


class JournalClosed(Exception):
    """The journal was closed: nothing more is appended, read or marked done."""


class JournalCorrupt(Exception):
    """The journal file cannot be read. It is left untouched: its undrained events may be the
    only copy, so deciding to move it aside is an operator's call, never ours."""


class Entry(msgspec.Struct, frozen=True):
    """One journaled event: ``seq`` orders entries (arrival order) and names them for
    ``mark_done``; ``received_ms`` is the wall-clock time it reached Python."""

    seq: int
    raw: RawEvent
    received_ms: int


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class JournalLoss(msgspec.Struct, frozen=True, kw_only=True):
    """Entries a journal had and no longer has (module docstring, "Damage"): seqs after
    ``last_seq`` up to ``watermark_seq`` are gone; they were received after ``since_ms`` (the
    last time the backlog was empty; 0 when unknown)."""

    last_seq: int
    watermark_seq: int
    since_ms: int


class HistoryTotals(msgspec.Struct, frozen=True):
    chunks: int = 0
    saved: int = 0
    skipped: int = 0
    errors: int = 0
    total: int = 0


class _Watermark:
    """``{seq} {empty_ms}``, fixed width, rewritten in place (one pwrite per append)."""

    WIDTH = 48

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def read(self) -> tuple[int, int] | None:
        raw = os.pread(self._fd, self.WIDTH, 0).decode("ascii", "replace").split()
        if len(raw) != 2 or not all(part.isdigit() for part in raw):
            return None
        return int(raw[0]), int(raw[1])

    def write(self, seq: int, empty_ms: int) -> None:
        os.pwrite(self._fd, f"{seq} {empty_ms}".ljust(self.WIDTH).encode("ascii"), 0)

    def close(self) -> None:
        os.close(self._fd)


def quarantine(path: Path, now_ms: int) -> Path:
    """Move an unreadable journal (and its -wal/-shm) aside as ``{name}.corrupt-{now_ms}``;
    returns the new path of the main file. Nothing is deleted."""
    target = path.with_name(f"{path.name}.corrupt-{now_ms}")
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.rename(target.with_name(target.name + suffix))
    path.rename(target)
    return target


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """An entry set aside because the store refused its content for good."""

    seq: int
    raw: RawEvent
    received_ms: int
    error: str
    set_aside_ms: int


class Journal:
    """One account's journal file. Thread-safe; every method is blocking (trio code goes
    through ``JournalReader``)."""

    def __init__(
        self,
        path: Path,
        max_backlog: int,
        *,
        synchronous: Synchronous = "FULL",
        now_ms: Callable[[], int] = _wall_ms,
    ) -> None:
        if max_backlog < 1:
            raise ValueError(f"max_backlog must be at least 1, got {max_backlog}")
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, got {synchronous!r}")
        self.path = path
        self.max_backlog = max_backlog
        self._now_ms = now_ms
        # One lock guards the write connection and the counters; the condition on it is
        # notified on every state change (space freed, an appender blocked, close).
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._read_lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []
        self._closed = False
        self._blocked = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = self._connect(synchronous)
        try:
            with self._guard():
                self._writer.executescript(_SCHEMA)
                row = self._writer.execute(
                    "SELECT (SELECT count(*) FROM entries), coalesce("
                    "(SELECT seq FROM sqlite_sequence WHERE name = 'entries'), 0)"
                ).fetchone()
            self._reader = self._connect(synchronous)
        except BaseException:
            self._writer.close()
            raise
        self._backlog: int = row[0]
        self._last_seq: int = row[1]
        self._empty_ms = _wall_ms() if self._backlog == 0 else 0  # recorded, never decided on
        self._watermark = _Watermark(path.with_suffix(".seq"))
        mark = self._watermark.read()
        #: Entries this journal lost before it was opened (module docstring), or None.
        self.loss: JournalLoss | None = None
        if mark is not None and mark[0] > self._last_seq:
            self.loss = JournalLoss(last_seq=self._last_seq, watermark_seq=mark[0], since_ms=mark[1])
        if mark is not None and self._backlog and mark[0] <= self._last_seq:
            self._empty_ms = mark[1]
        self._watermark.write(self._last_seq, self._empty_ms)

    def _connect(self, synchronous: Synchronous) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions. A single INSERT commits on its own,
        # and a reader never holds a read transaction open between calls (that would stop
        # checkpoints and let the WAL grow without bound).
        with self._guard():
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            try:
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise sqlite3.DatabaseError(f"cannot switch to WAL mode (got {mode})")
                conn.execute(f"PRAGMA synchronous={synchronous}")
                conn.execute("PRAGMA busy_timeout=10000")
                # Debian-style builds default to secure_delete=ON, which rewrites every freed
                # overflow page with zeros: marking a 1 MB history chunk done then costs ~4 ms
                # (measured: 250 vs 4,000 deletes/s). FAST zeroes what is free to zero; the same
                # content lives in the store anyway.
                conn.execute("PRAGMA secure_delete=FAST")
            except BaseException:
                conn.close()
                raise
        return conn

    def _guard(self) -> _CorruptionGuard:
        return _CorruptionGuard(self.path)

    @contextlib.contextmanager
    def _write_transaction(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` … ``COMMIT`` on the writer, rolled back on any error, inside
        the corruption guard; raises JournalClosed when closed. The caller holds ``_changed``."""
        self._check_open()
        with self._guard():
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield self._writer
                self._writer.execute("COMMIT")
            except BaseException:
                if self._writer.in_transaction:
                    self._writer.execute("ROLLBACK")
                raise

    # -- intake (foreign thread) -------------------------------------------------------------

    def append(self, raw: RawEvent) -> int:
        """Commit ``raw`` and return its seq; only then may the transport consider it handed
        over. Blocks while the backlog is at ``max_backlog``; raises JournalClosed when closed
        (also while blocked)."""
        with self._changed:
            if self._backlog >= self.max_backlog and not self._closed:
                self._blocked += 1
                self._changed.notify_all()
                try:
                    self._changed.wait_for(lambda: self._closed or self._backlog < self.max_backlog)
                finally:
                    self._blocked -= 1
            if self._closed:
                raise JournalClosed(f"journal {self.path} is closed")
            with self._guard():
                cur = self._writer.execute(
                    "INSERT INTO entries (name, data, received_ms) VALUES (?, ?, ?)",
                    (raw.name, raw.data, self._now_ms()),
                )
            seq = cur.lastrowid
            assert seq is not None
            self._backlog += 1
            self._last_seq = seq
            self._write_watermark()
            self._changed.notify_all()
        self._notify()
        return seq

    # -- consumption (trio worker threads) -----------------------------------------------------

    def read_after(
        self, after_seq: int, max_entries: int, max_bytes: int = DEFAULT_BATCH_BYTES,
        *, history: bool | None = None,
    ) -> list[Entry]:
        """Entries with seq > ``after_seq`` in seq order: at most ``max_entries``, and no more
        than ``max_bytes`` of event data (but always at least one entry, however large), so a
        run of history-sync chunks cannot blow up memory."""
        entries: list[Entry] = []
        size = 0
        with self._read_lock, self._guard():
            self._check_open()  # under the lock: close() takes it before closing the connection
            kind = "" if history is None else ("AND name = 'HistorySync'" if history else "AND name != 'HistorySync'")
            cur = self._reader.execute(
                f"SELECT seq, name, data, received_ms FROM entries WHERE seq > ? {kind} ORDER BY seq LIMIT ?",
                (after_seq, max_entries),
            )
            try:
                for seq, name, data, received_ms in cur:
                    size += len(data)
                    if entries and size > max_bytes:
                        break
                    entries.append(Entry(seq, RawEvent(name, bytes(data)), received_ms))
            finally:
                cur.close()
        return entries

    def mark_done(self, seqs: Iterable[int]) -> int:
        """Delete the entries ``seqs`` (any order, any subset; already-done seqs are ignored, so
        settling twice after a replay is harmless) in one transaction. Frees backlog and wakes
        blocked appenders. Returns how many entries were removed."""
        params = [(seq,) for seq in seqs]
        if not params:
            return 0
        with self._changed:
            with self._write_transaction():
                cur = self._writer.executemany("DELETE FROM entries WHERE seq = ?", params)
                removed = cur.rowcount
                self._writer.executemany("DELETE FROM history_counted WHERE seq = ?", params)
            self._backlog -= removed
            if self._backlog == 0:
                self._empty_ms = _wall_ms()
                self._write_watermark()
            self._changed.notify_all()
        return removed

    def history_totals(self) -> HistoryTotals | None:
        """The pairing's history totals; None until seeded (a new journal)."""
        with self._read_lock, self._guard():
            self._check_open()
            row = self._reader.execute(
                "SELECT chunks, saved, skipped, errors, total FROM history_totals WHERE id = 1").fetchone()
        return None if row is None else HistoryTotals(*row)

    def set_history_totals(self, totals: HistoryTotals, *, only_if_absent: bool = False) -> None:
        """Seed (``only_if_absent``) or reset the totals."""
        verb = "INSERT OR IGNORE" if only_if_absent else "INSERT OR REPLACE"
        with self._changed, self._guard():
            self._check_open()
            self._writer.execute(f"{verb} INTO history_totals (id, chunks, saved, skipped, errors, total) "
                                 "VALUES (1, ?, ?, ?, ?, ?)", msgspec.structs.astuple(totals))

    def count_history(self, seq: int, delta: HistoryTotals) -> HistoryTotals:
        """Add ``delta`` (one chunk's counts) to the totals unless entry ``seq`` was counted
        already; the totals after."""
        with self._changed, self._write_transaction():
            self._writer.execute("INSERT OR IGNORE INTO history_totals (id, chunks, saved, skipped, errors, total) "
                                 "VALUES (1, 0, 0, 0, 0, 0)")
            if self._writer.execute("INSERT OR IGNORE INTO history_counted (seq) VALUES (?)", (seq,)).rowcount:
                self._writer.execute(
                    "UPDATE history_totals SET chunks = chunks + ?, saved = saved + ?, skipped = skipped + ?, "
                    "errors = errors + ?, total = total + ? WHERE id = 1", msgspec.structs.astuple(delta))
            row = self._writer.execute(
                "SELECT chunks, saved, skipped, errors, total FROM history_totals WHERE id = 1").fetchone()
        return HistoryTotals(*row)

    def _write_watermark(self) -> None:
        """Under the write lock. A failure here must not fail the append that committed."""
        try:
            self._watermark.write(self._last_seq, self._empty_ms)
        except OSError as exc:
            log.warning("[journal] %s: watermark not written: %s", self.path, exc)

    def set_aside(self, seq: int, error: str) -> bool:
        """Move entry ``seq`` to the dead letters with ``error`` (module docstring); False when
        it is not pending (already done or already set aside)."""
        with self._changed:
            with self._write_transaction():
                self._writer.execute(
                    "INSERT OR IGNORE INTO dead_letters (seq, name, data, received_ms, error, set_aside_ms) "
                    "SELECT seq, name, data, received_ms, ?, ? FROM entries WHERE seq = ?",
                    (error, self._now_ms(), seq))
                removed = self._writer.execute("DELETE FROM entries WHERE seq = ?", (seq,)).rowcount
            self._backlog -= removed
            self._changed.notify_all()
        return removed > 0

    def dead_letters(self) -> list[DeadLetter]:
        with self._read_lock, self._guard():
            self._check_open()
            rows = self._reader.execute(
                "SELECT seq, name, data, received_ms, error, set_aside_ms FROM dead_letters ORDER BY seq"
            ).fetchall()
        return [DeadLetter(seq=seq, raw=RawEvent(name, bytes(data)), received_ms=received, error=error,
                           set_aside_ms=at) for seq, name, data, received, error, at in rows]

    def dead_letter_count(self) -> int:
        with self._read_lock, self._guard():
            self._check_open()
            return int(self._reader.execute("SELECT count(*) FROM dead_letters").fetchone()[0])

    def restore_dead_letters(self) -> int:
        """Put every dead letter back in the queue (new seqs, original ``received_ms``), in one
        transaction. Returns how many."""
        with self._changed:
            with self._write_transaction():
                moved = self._writer.execute(
                    "INSERT INTO entries (name, data, received_ms) "
                    "SELECT name, data, received_ms FROM dead_letters ORDER BY seq").rowcount
                self._writer.execute("DELETE FROM dead_letters")
                last = self._writer.execute(
                    "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'entries'), 0)"
                ).fetchone()[0]
            self._backlog += moved
            self._last_seq = int(last)
            self._write_watermark()
            self._changed.notify_all()
        self._notify()
        return moved

    # -- observation ---------------------------------------------------------------------------

    def backlog(self) -> int:
        """Entries appended and not yet done (what /diag reports; bounded by max_backlog).
        Lock-free: a torn read of one int cannot happen, and /diag must not wait on an fsync."""
        return self._backlog

    def last_seq(self) -> int:
        """The highest seq ever committed (0 for a new journal). AUTOINCREMENT keeps it, and
        so never reuses a seq, even after the newest entries were done and deleted: a reader's
        cursor can therefore never skip a fresh entry that took an old number."""
        return self._last_seq

    def blocked_appenders(self) -> int:
        """Threads currently held in ``append`` by backpressure (intake is being throttled)."""
        return self._blocked

    def wait_blocked(self, count: int = 1, timeout: float | None = None) -> bool:
        """Wait until at least ``count`` appenders are held by backpressure; False on timeout.
        Lets a supervisor (or a test) observe throttling without polling."""
        with self._changed:
            return self._changed.wait_for(lambda: self._blocked >= count, timeout)

    def oldest_pending_ms(self) -> int | None:
        """``received_ms`` of the oldest undone entry, or None when the backlog is empty: how
        far behind ingestion is, for /diag."""
        with self._read_lock, self._guard():
            self._check_open()
            row = self._reader.execute(
                "SELECT received_ms FROM entries ORDER BY seq LIMIT 1"
            ).fetchone()
        return None if row is None else int(row[0])

    @property
    def closed(self) -> bool:
        return self._closed

    # -- wake-ups and shutdown -----------------------------------------------------------------

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after every commit of ``append`` and on ``close``, on the
        appending (foreign) thread: it must be quick and must not block."""
        with self._lock:
            self._listeners = [*self._listeners, callback]

    def remove_listener(self, callback: Callable[[], None]) -> None:
        with self._lock:
            self._listeners = [cb for cb in self._listeners if cb is not callback]

    def _notify(self) -> None:
        for callback in self._listeners:  # a snapshot: add/remove replace the list
            try:
                callback()
            except Exception:  # the event is already durable; a listener must not undo that
                log.exception("[journal] listener failed path=%s", self.path)

    def _check_open(self) -> None:
        if self._closed:
            raise JournalClosed(f"journal {self.path} is closed")

    def close(self) -> None:
        """Refuse further appends (blocked ones raise JournalClosed), wake readers, close the
        file. Undone entries stay for the next start. Idempotent."""
        with self._changed:
            if self._closed:
                return
            self._closed = True
            self._changed.notify_all()
            with self._read_lock:
                self._reader.close()
            self._writer.close()
            self._watermark.close()
        self._notify()


class _CorruptionGuard:
    """Turns SQLite's "file is not a database" / "database disk image is malformed" into a
    JournalCorrupt naming the file, so an operator knows which file to inspect."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        code = getattr(exc, "sqlite_errorcode", None)
        if isinstance(exc, sqlite3.DatabaseError) and code is not None and code & 0xFF in _CORRUPT_CODES:
            raise JournalCorrupt(
                f"ingest journal {self._path} is unreadable ({exc}); it was left untouched. "
                "Its undrained events may exist nowhere else: inspect or move it aside "
                "(losing them) before restarting."
            ) from exc


class JournalReader:
    """The trio face of a journal: hands out entries in seq order, each once, and settles them.

    A cursor (``handed_out_upto``) remembers what was handed out, so entries still being
    processed are not returned twice; it lives in memory, so at process start (and after
    ``rewind``) every undone entry is replayed. Entries may be marked done in any order
    (several actors consume). Waiting is not polling: the journal's append listener wakes the
    waiting task through the trio token (``run_sync_soon``), from whatever thread appended.
    """

    def __init__(self, journal: Journal, *, history: bool | None = None) -> None:
        """``history``: None hands out every entry; True only history-sync chunks; False
        everything else (the two cursors of ``wadaemon.actors.dispatcher``)."""
        self._journal = journal
        self._history = history
        self.handed_out_upto = 0
        self._generation = 0
        self._token: trio.lowlevel.TrioToken | None = None
        self._wakeup: trio.Event | None = None
        journal.add_listener(self._on_append)

    def _on_append(self) -> None:
        # Runs on the appending thread. The token is set before a task first waits, so if it is
        # None nobody is waiting and the task will see the entry via ``last_seq``.
        token = self._token
        if token is None:
            return
        with contextlib.suppress(trio.RunFinishedError):  # trio is gone: nobody to wake
            token.run_sync_soon(self._wake)

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    def rewind(self) -> None:
        """Hand out every undone entry again (a restarted pipeline forgot what it held)."""
        self.handed_out_upto = 0
        self._generation += 1

    async def next_batch(self, max_entries: int, max_bytes: int = DEFAULT_BATCH_BYTES) -> list[Entry]:
        """Up to ``max_entries`` entries not yet handed out (at least one), waiting without
        polling until there is one. Raises JournalClosed once the journal is closed."""
        journal = self._journal
        self._token = trio.lowlevel.current_trio_token()
        while True:
            # A fresh event before looking: an append that lands after the look sets it.
            wakeup = self._wakeup = trio.Event()
            if journal.closed:
                raise JournalClosed(f"journal {journal.path} is closed")
            seen = journal.last_seq()
            if seen > self.handed_out_upto:
                generation = self._generation
                entries = await trio.to_thread.run_sync(partial(
                    journal.read_after, self.handed_out_upto, max_entries, max_bytes, history=self._history))
                if generation != self._generation:
                    continue  # rewound while reading: start over from the new cursor
                if entries:
                    self.handed_out_upto = entries[-1].seq
                    return entries
                # Every entry up to ``seen`` was committed before the read and is gone, so
                # done: skip past them (not past ``last_seq()`` now, which may be newer).
                self.handed_out_upto = seen
                continue
            await wakeup.wait()

    async def set_aside(self, seq: int, error: str) -> bool:
        """``Journal.set_aside`` in a thread."""
        return await trio.to_thread.run_sync(self._journal.set_aside, seq, error)

    def dead_letter_count(self) -> int:
        return self._journal.dead_letter_count()

    async def count_history(self, seq: int, delta: HistoryTotals) -> HistoryTotals:
        return await trio.to_thread.run_sync(self._journal.count_history, seq, delta)

    async def history_totals(self) -> HistoryTotals | None:
        return await trio.to_thread.run_sync(self._journal.history_totals)

    async def set_history_totals(self, totals: HistoryTotals, *, only_if_absent: bool = False) -> None:
        await trio.to_thread.run_sync(partial(self._journal.set_history_totals, totals, only_if_absent=only_if_absent))

    async def mark_done(self, seqs: Iterable[int]) -> None:
        """Settle entries whose writes are committed (blocking SQLite work in a thread)."""
        todo = list(seqs)
        if todo:
            await trio.to_thread.run_sync(self._journal.mark_done, todo)

    def backlog(self) -> int:
        return self._journal.backlog()

    def oldest_pending_ms(self) -> int | None:
        return self._journal.oldest_pending_ms()


class HeldAppends:
    """Appends that never drop an event, whatever the journal's file does.

    whatsmeow has acknowledged an event before the transport hands it over, so an append that
    fails (``database or disk is full``, an I/O error, a read-only remount) must not end with the
    event logged as lost. The event is held in memory instead, in arrival order, and one
    background thread retries the oldest with capped exponential backoff until the journal takes
    it. While anything is held, later events queue behind it (order is kept: the dispatcher
    relies on arrival order for identity) up to ``limit``; beyond that ``append`` blocks the
    calling thread — the same backpressure a full backlog applies, which slows WhatsApp's
    dispatch instead of losing what it sends. ``held()`` and ``last_error`` feed the status board
    and /health (``degraded`` while anything is held).

    What is held is in memory only: a crash while the disk is full loses it (nothing better is
    possible without a disk), and a close with events still held logs them as lost, loudly.
    ``JournalClosed`` is never held: it means shutdown, and the transport stops anyway.
    """

    def __init__(self, journal: Journal, *, limit: int = 1000, first_delay_s: float = 0.05,
                 max_delay_s: float = 5.0, label: str = "",
                 on_change: Callable[[int, str], None] | None = None) -> None:
        self._journal = journal
        self._on_change = on_change
        self._limit = limit
        self._first_delay_s = first_delay_s
        self._max_delay_s = max_delay_s
        self._label = label or str(journal.path)
        self._held: collections.deque[RawEvent] = collections.deque()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        self.last_error = ""
        self.failures = 0

    def held(self) -> int:
        return len(self._held)

    def append(self, raw: RawEvent) -> None:
        with self._cond:
            while len(self._held) >= self._limit and not self._stop.is_set():
                self._cond.wait()
            if self._stop.is_set():
                raise JournalClosed(f"journal {self._journal.path} is closed")
            if self._held:
                self._held.append(raw)
                self._changed()
                return
        try:
            self._journal.append(raw)
        except JournalClosed:
            raise
        except Exception as exc:
            with self._cond:
                self._hold_first(raw, exc)

    def _hold_first(self, raw: RawEvent, exc: Exception) -> None:
        self._held.appendleft(raw)
        self._note_failure(exc)
        log.error("[journal] %s refuses appends (%s): holding events in memory and retrying",
                  self._label, self.last_error)
        if self._flusher is None:
            self._flusher = threading.Thread(target=self._flush, name=f"journal-hold-{self._label}",
                                             daemon=True)
            self._flusher.start()

    def _note_failure(self, exc: Exception) -> None:
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"[:300]
        self._changed()

    def wait_held(self, count: int = 1, timeout: float | None = None) -> bool:
        """Wait until at least ``count`` events are held; False on timeout (for supervisors and
        tests, like ``Journal.wait_blocked``)."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._held) >= count, timeout)

    def _changed(self) -> None:
        """Wake ``wait_held`` and tell the status board (under ``_cond``: quick, never blocking)."""
        self._cond.notify_all()
        if self._on_change is not None:
            self._on_change(len(self._held), self.last_error)

    def _flush(self) -> None:
        delay = self._first_delay_s
        while not self._stop.wait(delay):
            with self._cond:
                if not self._held:
                    self._flusher = None
                    return
                raw = self._held[0]
            try:
                self._journal.append(raw)
            except JournalClosed:
                return
            except Exception as exc:
                with self._cond:
                    self._note_failure(exc)
                    if self.failures % 100 == 0:
                        log.error("[journal] %s still refuses appends (%d failures, %d events held): %s",
                                  self._label, self.failures, len(self._held), self.last_error)
                delay = min(max(delay * 2, self._first_delay_s), self._max_delay_s)
                continue
            with self._cond:
                self._held.popleft()
                self._cond.notify_all()
                if not self._held:
                    log.warning("[journal] %s accepts appends again: every held event is journaled",
                                self._label)
                    self.last_error = ""
                    self._flusher = None
                    self._changed()
                    return
                self._changed()
            delay = 0  # drain the rest at once

    def close(self) -> None:
        """Stop retrying; whatever is still held cannot be kept and is logged as lost."""
        with self._cond:
            self._stop.set()
            self._cond.notify_all()
            lost = len(self._held)
        if lost:
            log.error("[journal] %s: %d held events could not be journaled before shutdown: LOST",
                      self._label, lost)
