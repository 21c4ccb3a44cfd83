"""The ``store`` fixture: every contract test runs once per backend.

``sqlite`` is a fresh ``SqliteStore`` in ``tmp_path``; ``firestore`` is the fresh
``FirestoreStore`` on a reset emulator that ``tests/firestore_emulator.py`` provides (fixture
``firestore_store``), marked ``firestore`` so ``-m "not firestore"`` / ``-k sqlite`` skip Java.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from wadaemon.store.contract import Store
from wadaemon.store.sqlite import SqliteStore


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
