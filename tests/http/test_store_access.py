"""``StoreGateway`` with a local reader: reads on the loop, the worker-thread way when the
reader would wait, and no inline reads for a while after a slow one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from wadaemon.http.store_access import (
    INLINE_PAUSE_S,
    INLINE_SLOW_S,
    StoreCallFailed,
    StoreGateway,
    local_reader_of,
)
from wadaemon.store.contract import StoreError, StoreUnavailable


class Named:
    backend = "test"

    def __init__(self, name: str) -> None:
        self.name = name


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(gateway: StoreGateway, fn: Any) -> Any:
    async def go() -> Any:
        try:
            return await gateway.call(fn)
        finally:
            gateway.close()

    return asyncio.run(go())


def gateway(clock: Clock | None = None) -> StoreGateway:
    return StoreGateway(Named("main"), reader=Named("reader"), queue=True,  # type: ignore[arg-type]
                        clock=clock or Clock())


def test_reads_go_to_the_reader_on_the_loop() -> None:
    assert run(gateway(), lambda store: store.name) == "reader"


def test_a_read_that_would_wait_goes_to_the_store_in_a_worker_thread() -> None:
    def read(store: Named) -> str:
        if store.name == "reader":
            raise StoreUnavailable("database is locked")
        return store.name

    assert run(gateway(), read) == "main"


def test_a_reader_failure_of_another_kind_is_the_answer() -> None:
    def read(store: Named) -> str:
        raise StoreError("stored ThreadDoc does not decode")

    with pytest.raises(StoreCallFailed, match="does not decode"):
        run(gateway(), read)


def test_a_slow_inline_read_pauses_inline_reads() -> None:
    clock = Clock()
    gw = gateway(clock)
    seen: list[str] = []

    def slow(store: Any) -> str:  # a Named fake handed over as the Store
        name: str = store.name
        seen.append(name)
        clock.now += INLINE_SLOW_S * 2
        return name

    async def go() -> None:
        try:
            await gw.call(slow)
            await gw.call(slow)  # paused: a worker thread
            clock.now += INLINE_PAUSE_S
            await gw.call(lambda store: seen.append(store.name))  # type: ignore[attr-defined]  # inline again (a Named)
        finally:
            gw.close()

    asyncio.run(go())
    assert seen == ["reader", "main", "reader"]


def test_only_a_store_class_that_offers_a_reader_is_read_inline() -> None:
    class Offers(Named):
        def local_reader(self) -> Named:
            return Named("reader")

    class Forwards(Named):
        def __getattr__(self, name: str) -> Any:  # a fault-injecting wrapper's forwarding
            return getattr(Offers("inner"), name)

    offered = local_reader_of(Offers("main"))  # type: ignore[arg-type]
    assert offered is not None and offered.name == "reader"  # type: ignore[attr-defined]
    assert local_reader_of(Forwards("wrapper")) is None
