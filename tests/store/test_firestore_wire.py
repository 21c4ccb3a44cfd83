"""The raw Write encoder (``firestore_wire``) against the stock client's encoder: same bytes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from google.cloud.firestore_v1 import _helpers
from google.cloud.firestore_v1.types import document as document_types
from hypothesis import given
from hypothesis import strategies as st

from wadaemon.store.firestore_wire import create_write, delete_write, update_write

PATH = "projects/p/databases/(default)/documents/threads/t1/messages/m1"


def stock(value: Any) -> bytes:
    return bytes(document_types.Value.pb(_helpers.encode_value(value)).SerializeToString(deterministic=True))


def ours(value: Any) -> bytes:
    write = update_write(PATH, {"v": value})
    return bytes(write.update.fields["v"].SerializeToString(deterministic=True))


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(),
    st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(min_size=1, max_size=8), inner, max_size=4),
    max_leaves=12,
)


@given(values)
def test_every_value_encodes_like_the_stock_client(value: Any) -> None:
    assert ours(value) == stock(value)


@pytest.mark.parametrize("value", [
    {}, [], {"a": {}}, {"a": []}, True, 0, -1, "", 1.5,
    datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
    datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    datetime(1960, 6, 1, tzinfo=UTC),
])
def test_edge_values_encode_like_the_stock_client(value: Any) -> None:
    assert ours(value) == stock(value)


def test_a_naive_datetime_is_taken_as_utc_like_the_stock_client() -> None:
    assert ours(datetime(2026, 1, 2, 3, 4, 5)) == stock(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))


def test_an_unstorable_value_is_a_clear_type_error() -> None:
    with pytest.raises(TypeError, match="cannot store a bytearray"):
        update_write(PATH, {"v": bytearray(b"x")})


def test_update_mask_names_written_and_deleted_top_level_fields_only() -> None:
    write = update_write(PATH, {"body": "hi", "reactions": {"a@s.whatsapp.net": "+"}, "odd.name": 1}, ["editedBody"])
    assert write.update.name == PATH
    assert list(write.update_mask.field_paths) == ["body", "reactions", "`odd.name`", "editedBody"]
    assert "editedBody" not in write.update.fields  # named in the mask, absent: deleted
    assert not write.HasField("current_document")


def test_create_is_preconditioned_on_absence_and_has_no_mask() -> None:
    write = create_write(PATH, {"body": "hi"})
    assert write.current_document.exists is False and write.current_document.HasField("exists")
    assert not write.HasField("update_mask")


def test_delete_names_the_document() -> None:
    assert delete_write(PATH).delete == PATH
