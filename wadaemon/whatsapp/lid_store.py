"""LID -> phone-number pairs read from whatsmeow's session databases, without a client.

whatsmeow records every pair it learns in its session database, table
``whatsmeow_lid_map(lid, pn)``, holding the *user* parts (``123456789`` and ``40712345678``;
full JIDs are accepted too). Adoption (``wadaemon adopt``) needs these pairs for accounts that
are not running, so it reads the table directly, read-only: no neonize client is started and
nothing is written. A session without the table (never connected) has no pairs. This module
reads session files; ``wadaemon.whatsapp.sessions`` reads the same table in PostgreSQL and
turns its rows into JIDs with ``pairs_to_jids``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from wadaemon.identity import LID_SERVER, PN_SERVER, normalise_jid


def _jid(value: str, server: str) -> str:
    value = value.strip()
    return normalise_jid(value if "@" in value else f"{value}@{server}")


def lid_mappings(session_db: Path) -> dict[str, str]:
    """``{"123@lid": "40712345678@s.whatsapp.net"}`` from one session database ({} if none)."""
    if not session_db.is_file():
        return {}
    try:
        db = sqlite3.connect(f"file:{session_db}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return {}
    try:
        rows = db.execute("SELECT lid, pn FROM whatsmeow_lid_map").fetchall()
    except sqlite3.Error:
        return {}
    finally:
        db.close()
    return pairs_to_jids(rows)


def pairs_to_jids(rows: list[tuple[object, object]]) -> dict[str, str]:
    """``whatsmeow_lid_map`` rows as ``{lid JID: phone-number JID}`` (empty parts skipped)."""
    return {_jid(str(lid), LID_SERVER): _jid(str(pn), PN_SERVER) for lid, pn in rows if lid and pn}
