"""Where the WhatsApp (whatsmeow) sessions live: files in the data dir, or PostgreSQL.

neonize opens a session store from one string (``NewClient(name)``): a SQLite file path, or a
URL starting with ``postgres`` (its Go side then opens whatsmeow's ``sqlstore`` with the
``postgres`` driver, lib/pq). whatsmeow's store *can* hold several devices in one database, but
neonize resumes "the first stored device" unless told a JID, and pairing a second account into
the same tables needs its "new device" switch: sharing one set of tables between accounts
invites one account resuming another's session. Nor can accounts share a database in separate
*schemas*: whatsmeow's schema upgrade looks its version table up by name in every schema, finds
the first account's, and then fails in the second's (``relation "whatsmeow_version" does not
exist``; tested). So each account gets **its own database** (``wa_<n>``) on the server named by
``WADAEMON_SESSION_DB``, created on first use (the role needs ``CREATEDB``, or an operator
creates them); whatsmeow creates its tables there on first open. A registry table
``wadaemon_sessions(account_id, database_name)`` in the database the URL names maps account
ids (any text) to database names (plain identifiers), so the mapping never depends on escaping
rules, and every instance on every machine finds the same one.

Several machines running instances then see the same sessions; which instance *uses* one is
decided by the account's ownership lease (``wadaemon.cluster``), never by the session store.

"Paired" means the account's ``whatsmeow_device`` table has a row with a JID (whatsmeow deletes
it on logout), read with plain SQL: no neonize, no Go, no connection to WhatsApp. The LID pairs
whatsmeow learned (``whatsmeow_lid_map``, which ``wadaemon adopt`` needs) are read the same way,
from either kind of store.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from wadaemon.config import Settings
from wadaemon.identity import normalise_jid
from wadaemon.whatsapp import lid_store

log = logging.getLogger("wadaemon.sessions")

REGISTRY = "wadaemon_sessions"


class Session(Protocol):
    """One account's session store, as neonize opens it."""

    account_id: str

    @property
    def name(self) -> str:
        """What ``NewClient`` gets: a file path or a PostgreSQL URL (may hold a password)."""
        ...

    @property
    def client_key(self) -> str:
        """The key of the client in Go's client map (unique per account)."""
        ...

    def prepare(self) -> None:
        """Make sure the store can be opened (directory, schema)."""
        ...

    def paired_jid(self) -> str:
        """The JID of the paired device, "" when none."""
        ...


class SessionStore(Protocol):
    def session(self, account_id: str) -> Session: ...

    def paired_accounts(self) -> list[str]: ...

    def lid_mappings(self, account_id: str) -> dict[str, str]:
        """``{lid JID: phone-number JID}`` that whatsmeow learned for the account ({} if none)."""
        ...


# -- files ------------------------------------------------------------------------------------


class FileSession:
    def __init__(self, account_id: str, path: Path) -> None:
        self.account_id = account_id
        self.path = path

    @property
    def name(self) -> str:
        return str(self.path)

    @property
    def client_key(self) -> str:
        return str(self.path)

    def prepare(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def paired_jid(self) -> str:
        """whatsmeow keeps one row per paired device in ``whatsmeow_device``; opened read-only."""
        if not self.path.is_file():
            return ""
        try:
            with closing(sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)) as db:
                row = db.execute("SELECT jid FROM whatsmeow_device LIMIT 1").fetchone()
        except sqlite3.Error as exc:
            log.warning("[sessions] session=%s unreadable as a whatsmeow session: %s", self.path, exc)
            return ""
        return normalise_jid(str(row[0])) if row and row[0] else ""


class FileSessions:
    """``{data_dir}/sessions/{account}.db``: one SQLite session file per account."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def session(self, account_id: str) -> FileSession:
        return FileSession(account_id, self.directory / f"{account_id}.db")

    def lid_mappings(self, account_id: str) -> dict[str, str]:
        return lid_store.lid_mappings(self.session(account_id).path)

    def paired_accounts(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(path.stem for path in self.directory.glob("*.db")
                      if FileSession(path.stem, path).paired_jid())


# -- PostgreSQL -------------------------------------------------------------------------------


def _connect(url: str) -> Any:
    import psycopg  # only with WADAEMON_SESSION_DB

    return psycopg.connect(url, autocommit=True, connect_timeout=10)


def _with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


class PostgresSession:
    def __init__(self, store: PostgresSessions, account_id: str) -> None:
        self.store = store
        self.account_id = account_id

    @property
    def database(self) -> str:
        return self.store.database_of(self.account_id)

    @property
    def name(self) -> str:
        return _with_database(self.store.url, self.database)

    @property
    def client_key(self) -> str:
        return f"wadaemon:{self.account_id}"

    def prepare(self) -> None:
        self.store.database_of(self.account_id)

    def paired_jid(self) -> str:
        jids = self.store.paired_jids([self.account_id])
        return jids.get(self.account_id, "")


class PostgresSessions:
    """Every account's session in a database of its own on one PostgreSQL server."""

    def __init__(self, url: str) -> None:
        self.url = url
        #: Account databases are named after the registry's (``{registry}_wa_{n}``), so two
        #: deployments sharing a server never collide.
        self.prefix = (urlsplit(url).path.strip("/") or "postgres")[:40]
        with closing(_connect(url)) as db:
            db.execute(f"CREATE TABLE IF NOT EXISTS {REGISTRY} ("
                       "account_id text PRIMARY KEY, database_name text NOT NULL UNIQUE, "
                       "created_at timestamptz NOT NULL DEFAULT now())")
            db.execute(f"CREATE SEQUENCE IF NOT EXISTS {REGISTRY}_seq")

    def session(self, account_id: str) -> PostgresSession:
        return PostgresSession(self, account_id)

    def database_of(self, account_id: str) -> str:
        """The account's database, registered and created on first use (idempotent, and safe
        when several instances do it at once: the registry's primary key decides)."""
        import psycopg

        with closing(_connect(self.url)) as db:
            row = db.execute(f"SELECT database_name FROM {REGISTRY} WHERE account_id = %s",
                             (account_id,)).fetchone()
            if row is None:
                db.execute(f"INSERT INTO {REGISTRY} (account_id, database_name) "
                           f"VALUES (%s, %s || '_wa_' || nextval('{REGISTRY}_seq')) "
                           "ON CONFLICT (account_id) DO NOTHING", (account_id, self.prefix))
                row = db.execute(f"SELECT database_name FROM {REGISTRY} WHERE account_id = %s",
                                 (account_id,)).fetchone()
            database = str(row[0])
            if db.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is None:
                with contextlib.suppress(psycopg.errors.DuplicateDatabase):  # another instance was quicker
                    db.execute(f'CREATE DATABASE "{database}"')
            return database

    def paired_jids(self, account_ids: list[str] | None = None) -> dict[str, str]:
        """account id -> paired JID, for the registered accounts whose device table has one."""
        import psycopg

        with closing(_connect(self.url)) as db:
            rows = db.execute(f"SELECT account_id, database_name FROM {REGISTRY} ORDER BY account_id").fetchall()
        found: dict[str, str] = {}
        for account_id, database in rows:
            if account_ids is not None and account_id not in account_ids:
                continue
            try:
                with closing(_connect(_with_database(self.url, database))) as db:
                    if db.execute("SELECT to_regclass('whatsmeow_device')").fetchone()[0] is None:
                        continue  # never opened by whatsmeow: not paired
                    row = db.execute("SELECT jid FROM whatsmeow_device LIMIT 1").fetchone()
            except psycopg.Error as exc:
                log.warning("[sessions] accountId=%s session database %s unreadable: %s", account_id, database, exc)
                continue
            if row and row[0]:
                found[str(account_id)] = normalise_jid(str(row[0]))
        return found

    def paired_accounts(self) -> list[str]:
        return sorted(self.paired_jids())

    def lid_mappings(self, account_id: str) -> dict[str, str]:
        """Read from the account's database if it has one; nothing is created or written."""
        import psycopg

        with closing(_connect(self.url)) as db:
            row = db.execute(f"SELECT database_name FROM {REGISTRY} WHERE account_id = %s",
                             (account_id,)).fetchone()
        if row is None:
            return {}
        try:
            with closing(_connect(_with_database(self.url, str(row[0])))) as db:
                if db.execute("SELECT to_regclass('whatsmeow_lid_map')").fetchone()[0] is None:
                    return {}
                rows = db.execute("SELECT lid, pn FROM whatsmeow_lid_map").fetchall()
        except psycopg.Error as exc:
            log.warning("[sessions] accountId=%s LID pairs unreadable: %s", account_id, exc)
            return {}
        return lid_store.pairs_to_jids(rows)


def open_sessions(settings: Settings) -> SessionStore:
    if settings.session_db is not None:
        return PostgresSessions(settings.session_db)
    return FileSessions(settings.data_dir / "sessions")
