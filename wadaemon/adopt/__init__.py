"""Adopting a database the old Node backend wrote: ``wadaemon adopt`` (see ``docs/adopt.md``).

``rules`` decides what each legacy document should become (pure functions over field maps);
``runner`` walks an account's documents through ``wadaemon.store.legacy`` and applies them,
resumably, beside a running daemon.
"""
