"""``PageCache``: a page comes back only under the marks it was kept with, and the least
recently used pages go first once the bodies pass the byte bound."""

from __future__ import annotations

from wadaemon.http.page_cache import PageCache


def test_a_page_comes_back_only_under_the_same_marks() -> None:
    cache = PageCache()
    cache.put("k", (1, 2), b"page")
    assert cache.get("k", (1, 2)) == b"page"
    assert cache.get("k", (1, 3)) is None
    assert cache.get("k", None) is None  # no marks: nothing can be reused
    cache.put("none", None, b"x")
    assert cache.get("none", None) is None and cache.size_bytes == 4
    assert (cache.hits, cache.misses) == (1, 3)


def test_least_recently_used_pages_go_first_past_the_byte_bound() -> None:
    cache = PageCache(capacity_bytes=10)
    cache.put("a", (1,), b"aaaa")
    cache.put("b", (1,), b"bbbb")
    assert cache.get("a", (1,)) == b"aaaa"  # a is now the most recent
    cache.put("c", (1,), b"cccc")
    assert cache.get("b", (1,)) is None and cache.get("a", (1,)) == b"aaaa"
    cache.put("a", (2,), b"AA")  # replaced, not counted twice
    assert cache.size_bytes == 6
    cache.put("huge", (1,), b"x" * 11)  # larger than the bound: never kept
    assert cache.get("huge", (1,)) is None and cache.size_bytes == 6
