"""The store: one contract (``contract.Store``), two adapters (Firestore, embedded SQLite)."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wadaemon.config import Settings
    from wadaemon.store.contract import Store

log = logging.getLogger("wadaemon.store")

#: How long closing the store may take at shutdown (a Firestore channel to a frozen server).
CLOSE_TIMEOUT_S = 3.0


def open_store(settings: Settings) -> Store:
    """Firestore when any Firestore setting is present (docs/configuration.md), else SQLite under the data dir.

    Adapters are imported here, not at module level, so the SQLite path never loads gRPC.
    """
    if settings.store_backend == "firestore":
        from wadaemon.store.firestore import FirestoreStore

        return FirestoreStore.from_settings(
            project=settings.firestore_project,
            service_account_json=settings.firebase_service_account_json,
            credentials_path=settings.google_application_credentials,
            emulator_host=settings.firestore_emulator_host,
        )
    from wadaemon.store.sqlite import SqliteStore

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return SqliteStore(settings.data_dir / "wadaemon.sqlite")


def close_store(store: Store, timeout: float = CLOSE_TIMEOUT_S) -> bool:
    """Close ``store`` from a daemon thread, waiting ``timeout`` at most, so that a store that
    does not answer cannot hold the process at exit. False if the close did not finish."""
    closer = threading.Thread(target=store.close, name="wadaemon-store-close", daemon=True)
    closer.start()
    closer.join(timeout)
    if closer.is_alive():
        log.warning("store close did not finish within %.0fs: leaving it", timeout)
        return False
    return True
