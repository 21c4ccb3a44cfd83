"""``firestore.indexes.json``: deployable with the Firebase CLI as it is, and covering every
query the inbox and the daemon run (each query of the inbox tests is checked by the autouse
``queries`` fixture in ``conftest.py``; here every read the store offers is run once)."""

from __future__ import annotations

import pytest
from google.cloud.firestore_v1 import FieldFilter

from tests.inbox import app
from tests.inbox.indexes import IndexFile, QueryShape, covering_index, load_indexes, needs_composite
from tests.store.builders import ACCOUNT, PEER, PEER_LID, T0, message, summary, tid
from wadaemon.domain import AccountDoc
from wadaemon.store.contract import PageKey
from wadaemon.store.firestore import FirestoreStore


def test_the_index_file_is_in_the_firebase_cli_format() -> None:
    indexes = load_indexes()  # unknown keys are refused
    assert indexes.indexes
    keys = set()
    for index in indexes.indexes:
        assert index.query_scope in ("COLLECTION", "COLLECTION_GROUP")
        assert len(index.fields) >= 2, "the CLI refuses a composite index of one field"
        assert all(f.order in ("ASCENDING", "DESCENDING") for f in index.fields)
        key = (index.collection_group, index.query_scope, index.fields)
        assert key not in keys, f"duplicate index {key}"
        keys.add(key)


def test_the_inbox_list_query_needs_its_index() -> None:
    """The rule can fail: without the index, the inbox's list query is reported uncovered."""
    shape = QueryShape(collection="threads", equality=frozenset({"accountId"}),
                       orders=(("lastMessageAt", "DESCENDING"),))
    assert needs_composite(shape)
    assert covering_index(shape, IndexFile(indexes=())) is None
    assert covering_index(shape, load_indexes()) is not None
    assert covering_index(QueryShape(collection="threads", equality=frozenset({"accountId"}),
                                     orders=(("lastMessageAt", "ASCENDING"),)), load_indexes()) is None
    assert not needs_composite(QueryShape(collection="messages", orders=(("tsClient", "DESCENDING"),)))


@pytest.mark.firestore
def test_every_query_of_the_store_and_the_inbox_is_covered(
        firestore_store: FirestoreStore, queries: list[QueryShape]) -> None:
    store = firestore_store
    store.upsert_messages([message("m1", ts_ms=T0), message("l1", ts_ms=T0 + 1, client_jid=PEER_LID)])
    store.advance_threads([summary(T0), summary(T0 + 1, client_jid=PEER_LID)])
    store.merge_threads(ACCOUNT, PEER_LID, PEER)
    store.update_account(ACCOUNT, AccountDoc(state="connected"))
    store.list_threads(ACCOUNT, limit=10)
    store.list_threads(ACCOUNT, limit=10, after=PageKey(ms=T0 + 5, id=tid()))
    store.list_threads(ACCOUNT, limit=10, after=PageKey(ms=None, id=tid()))
    store.find_thread(ACCOUNT, PEER_LID)
    store.threads_missing_last_message(ACCOUNT, limit=10)
    store.list_messages(tid(), limit=10, order="asc")
    store.list_messages(tid(), limit=10, order="desc", after=PageKey(ms=T0 + 5, id="m1"))
    store.oldest_message(tid())
    store.newest_message(tid())
    store.list_account_ids()
    client = store.client
    for limit in app.THREAD_LIST_LIMITS:
        assert [row["id"] for row in app.thread_rows(client, ACCOUNT, limit=limit)] == [tid()]
    assert [m.doc_id for m in app.chat(client, tid())] == ["l1", "m1"]
    # the inbox's diagnostics screen (screens/debug/whatsapp_diagnostics_screen.dart)
    list(client.collection_group("messages").where(filter=FieldFilter("accountId", "==", ACCOUNT))
         .where(filter=FieldFilter("direction", "==", "inbound")).stream())
    list(client.collection("threads").where(filter=FieldFilter("accountId", "==", ACCOUNT)).limit(1).stream())
    assert any(needs_composite(shape) for shape in queries)
    assert {shape.collection for shape in queries} >= {"threads", "messages"}
