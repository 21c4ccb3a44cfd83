"""WhatsApp sessions in a real PostgreSQL server (``tests/postgres_server.py``).

neonize's own Go code opens each account's store (``get_all_devices_from_db``: whatsmeow's
``sqlstore`` with the ``postgres`` driver runs its schema upgrade there) — no connect(), no
WhatsApp. A paired device is then a row in that account's ``whatsmeow_device``, as whatsmeow
writes it after pairing.
"""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg
import pytest

from tests.postgres_server import PostgresServer
from wadaemon.config import load_settings
from wadaemon.whatsapp.neonize_transport import NeonizeTransport
from wadaemon.whatsapp.sessions import PostgresSessions, open_sessions

pytestmark = pytest.mark.slow


@pytest.fixture
def database(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> str:
    """A fresh registry database per test; its accounts' databases are named after it."""
    name = f"reg_{request.node.name.lower()[5:30]}"
    with contextlib.closing(psycopg.connect(postgres_server.url(), autocommit=True)) as db:
        for (old,) in db.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (name + "%",)).fetchall():
            db.execute(f'DROP DATABASE "{old}" WITH (FORCE)')
    with contextlib.closing(psycopg.connect(postgres_server.url(), autocommit=True)) as db:
        db.execute(f'CREATE DATABASE "{name}"')
    return postgres_server.url(name)


def open_with_neonize(url: str) -> list[Any]:
    """Opens the store through neonize's Go side (whatsmeow creates its tables) and lists devices."""
    from neonize.client import ClientFactory, func_callback_bytes2, gocode, log_whatsmeow

    try:
        devices: list[Any] = ClientFactory.get_all_devices_from_db(url)
    except ValueError:  # neonize hands back Go's error text as if it were a device list
        raise AssertionError(gocode.GetAllDevices(url.encode(), func_callback_bytes2(log_whatsmeow)).decode()) from None
    return devices


def pair_in_store(url: str, jid: str) -> None:
    """What whatsmeow's PutDevice leaves after a pairing: one row in ``whatsmeow_device``."""
    with contextlib.closing(psycopg.connect(url, autocommit=True)) as db:
        columns = db.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'whatsmeow_device' AND table_schema = current_schema() "
            "AND is_nullable = 'NO' AND column_default IS NULL").fetchall()
        values: dict[str, Any] = {}
        for name, kind in columns:
            if name == "jid":
                values[name] = jid
            elif kind == "bytea":
                values[name] = bytes(64 if name.endswith("_sig") else 32) if name != "adv_details" else b"\x00"
            elif kind in ("integer", "bigint", "smallint"):
                values[name] = 1
            elif kind == "boolean":
                values[name] = False
            else:
                values[name] = ""
        names = ", ".join(values)
        marks = ", ".join(["%s"] * len(values))
        db.execute(f"INSERT INTO whatsmeow_device ({names}) VALUES ({marks})", list(values.values()))


def test_each_account_gets_its_own_database_that_neonize_opens(database: str) -> None:
    sessions = PostgresSessions(database)
    shop_ro, shop_de = sessions.session("shop-ro"), sessions.session("shop/de weird id")
    shop_ro.prepare()
    shop_de.prepare()
    assert shop_ro.database != shop_de.database
    assert sessions.paired_accounts() == []  # registered, never opened: not paired
    for session in (shop_ro, shop_de):
        assert session.name.split("?")[0].endswith("/" + session.database)
        assert open_with_neonize(session.name) == []  # whatsmeow upgraded an empty store
        with contextlib.closing(psycopg.connect(session.name, autocommit=True)) as db:
            assert db.execute("SELECT to_regclass('whatsmeow_device')").fetchone() == ("whatsmeow_device",)
    assert sessions.paired_accounts() == []


def test_the_adapter_lists_the_paired_accounts_it_holds(database: str) -> None:
    sessions = open_sessions(load_settings({"WADAEMON_SESSION_DB": database}))
    assert isinstance(sessions, PostgresSessions)
    for account in ("a-paired", "b-unpaired", "c-paired"):
        open_with_neonize(sessions.session(account).name)
    pair_in_store(sessions.session("a-paired").name, "40711111111.0:7@s.whatsapp.net")
    pair_in_store(sessions.session("c-paired").name, "40722222222.0:3@s.whatsapp.net")
    assert sessions.paired_accounts() == ["a-paired", "c-paired"]
    assert sessions.session("c-paired").paired_jid() == "40722222222@s.whatsapp.net"
    assert sessions.session("b-unpaired").paired_jid() == ""
    # neonize itself sees exactly the paired device in that account's store, none of the others'
    [device] = open_with_neonize(sessions.session("a-paired").name)
    assert device.JID.User.split(":")[0] == "40711111111"  # neonize keeps the device part
    # A second instance (another machine) sees the same sessions and the same schemas.
    again = PostgresSessions(database)
    assert again.paired_accounts() == ["a-paired", "c-paired"]
    assert again.session("a-paired").database == sessions.session("a-paired").database


def test_the_transport_is_given_the_account_database_and_its_own_client_key(database: str) -> None:
    sessions = PostgresSessions(database)
    session = sessions.session("shop-ro")
    transport = NeonizeTransport("shop-ro", session, full_history=True)
    assert transport.session.name == session.name
    assert transport.session.client_key == "wadaemon:shop-ro"
    # Unpaired: start() reports it instead of connecting (no QR loop, no network).
    assert transport.session.paired_jid() == ""


def test_adoption_reads_the_lid_pairs_whatsmeow_learned_from_postgres(database: str) -> None:
    sessions = PostgresSessions(database)
    open_with_neonize(sessions.session("shop-ro").name)  # whatsmeow creates whatsmeow_lid_map
    with contextlib.closing(psycopg.connect(sessions.session("shop-ro").name, autocommit=True)) as db:
        db.execute("INSERT INTO whatsmeow_lid_map (lid, pn) VALUES ('123456789012345', '40711111111')")
    sessions.session("never-opened").prepare()  # registered, its database empty
    assert sessions.lid_mappings("shop-ro") == {"123456789012345@lid": "40711111111@s.whatsapp.net"}
    assert sessions.lid_mappings("never-opened") == {}
    assert sessions.lid_mappings("unknown") == {}
    assert sessions.paired_accounts() == []  # reading pairs registered nothing new
