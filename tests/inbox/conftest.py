"""Every Firestore query run during the inbox tests — by the daemon, by the store, or by the
inbox's own queries restated in ``app.py`` — is recorded, and at the end of each test checked
against ``firestore.indexes.json`` (the emulator does not enforce indexes; production does)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from google.cloud.firestore_v1.query import Query

from tests.inbox.indexes import (
    QueryShape,
    covering_index,
    describe,
    load_indexes,
    needs_composite,
    shape_of,
)


@pytest.fixture(autouse=True)
def queries(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[QueryShape]]:
    """The shapes of the queries run during the test; asserted covered at teardown."""
    seen: list[QueryShape] = []
    original = Query._get_stream_iterator

    def recording(self: Query, *args: Any, **kwargs: Any) -> Any:
        seen.append(shape_of(self._to_protobuf()))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Query, "_get_stream_iterator", recording)
    yield seen
    indexes = load_indexes()
    missing = {describe(shape) for shape in seen if needs_composite(shape) and covering_index(shape, indexes) is None}
    assert not missing, f"queries without a composite index in firestore.indexes.json: {sorted(missing)}"
