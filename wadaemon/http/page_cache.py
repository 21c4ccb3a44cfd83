"""Encoded pages of the API, reused while nothing they were read from has changed.

Fifty clients polling the same thread list, or the same few chats, would otherwise each cost
a read, a decode and an encode of the same fifty documents. A page is kept with the store's
*marks* (``LocalReader.marks``): numbers the store changes after every commit that touches
what the page was read from — any thread document for a thread list, one thread's document
and messages for a messages page, and every mark on any commit of another process. The marks
are read *before* the page, so a write that lands meanwhile makes the kept page look older
than it is, never newer: a page can be refused too often, never served stale. A store that
cannot give marks (Firestore: other instances write it and nothing tells this one) gets no
reuse at all; every request reads.

The least recently used pages go first once the kept bodies pass ``capacity_bytes`` (32 MB
by default: every page of 50 messages of a thousand chats, at about 30 KB a page).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

Marks = tuple[int, ...]


class PageCache:
    def __init__(self, capacity_bytes: int = 32 << 20) -> None:
        self.capacity_bytes = capacity_bytes
        self.size_bytes = 0
        self._pages: OrderedDict[Hashable, tuple[Marks, bytes]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, marks: Marks | None) -> bytes | None:
        """The page kept under ``key`` if it was read under these very marks."""
        kept = self._pages.get(key) if marks is not None else None
        if kept is None or kept[0] != marks:
            self.misses += 1
            return None
        self._pages.move_to_end(key)
        self.hits += 1
        return kept[1]

    def put(self, key: Hashable, marks: Marks | None, body: bytes) -> None:
        if marks is None or len(body) > self.capacity_bytes:
            return
        if (old := self._pages.pop(key, None)) is not None:
            self.size_bytes -= len(old[1])
        self._pages[key] = (marks, body)
        self.size_bytes += len(body)
        while self.size_bytes > self.capacity_bytes:
            _, (_, dropped) = self._pages.popitem(last=False)
            self.size_bytes -= len(dropped)
