"""Shared fixtures. The Firestore emulator harness is a plugin module of its own.

``store``: every test taking it runs once per backend — ``sqlite`` is a fresh ``SqliteStore``
in ``tmp_path``; ``firestore`` the fresh ``FirestoreStore`` on a reset emulator
(``tests/firestore_emulator.py``), marked ``firestore``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from wadaemon.store.contract import Store
from wadaemon.store.sqlite import SqliteStore

pytest_plugins = ["tests.firestore_emulator", "tests.postgres_server"]


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(tmp_path / "wadaemon.sqlite")
    try:
        yield store
    finally:
        store.close()


@pytest.fixture(params=["sqlite", pytest.param("firestore", marks=pytest.mark.firestore)])
def store(request: pytest.FixtureRequest) -> Store:
    backend: Store = request.getfixturevalue(f"{request.param}_store")
    return backend
