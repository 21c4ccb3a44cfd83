"""The fence: the renew deadline cancels the guarded work and refuses its writes, shielded or not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from tests.store.builders import ACCOUNT, message
from wadaemon.cluster.fence import Fence
from wadaemon.domain import Lease
from wadaemon.store.runner import LeaseLost, StoreRunner
from wadaemon.store.sqlite import SqliteStore

LEASE = Lease(kind="account", key=ACCOUNT, owner_id="a", expires_at_ms=0, acquired_at_ms=0, epoch=1)


async def test_deadline_cancels_the_work_and_then_refuses_even_shielded_writes(tmp_path: Path,
                                                                               autojump_clock: Any) -> None:
    store = SqliteStore(tmp_path / "s.sqlite")
    runner = StoreRunner(store)
    fence = Fence(LEASE, deadline=trio.current_time() + 2)
    runner.fence(ACCOUNT, fence)
    outcome: list[str] = []
    with fence.scope:
        try:
            await runner.write(ACCOUNT, store.upsert_messages, [message("M1")])
            outcome.append("wrote M1")
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):  # what writers do on their way out
                try:
                    await runner.write(ACCOUNT, store.upsert_messages, [message("M2")])
                    outcome.append("wrote M2")
                except LeaseLost:
                    outcome.append("refused M2")
    assert trio.current_time() == pytest.approx(2)
    assert outcome == ["wrote M1", "refused M2"]
    assert store.get_message(message("M2").thread_id, "M2") is None
    store.close()


async def test_renewal_moves_the_deadline_and_revoke_stops_at_once(autojump_clock: Any) -> None:
    fence = Fence(LEASE, deadline=trio.current_time() + 2)
    with fence.scope:
        await trio.sleep(1.5)
        assert fence.renewed(LEASE, trio.current_time() + 2)
        await trio.sleep(1.5)
        assert fence.valid()  # would have passed the first deadline
        fence.revoke()
        await trio.sleep(10)
    assert trio.current_time() == pytest.approx(3)
    assert not fence.valid()
    assert not fence.renewed(LEASE, trio.current_time() + 2)  # too late: cannot un-cancel


async def test_a_send_is_refused_once_the_fence_fails(tmp_path: Path, autojump_clock: Any) -> None:
    """``outbound.deliver`` asks ``check_fence`` before handing a message to the socket."""
    store = SqliteStore(tmp_path / "s.sqlite")
    runner = StoreRunner(store)
    fence = Fence(LEASE, deadline=trio.current_time() + 2)
    runner.fence(ACCOUNT, fence)
    runner.check_fence(ACCOUNT)  # valid: nothing raised
    runner.check_fence("another-account")  # not fenced here at all
    await trio.sleep(2)
    with pytest.raises(LeaseLost):
        runner.check_fence(ACCOUNT)
    store.close()


async def test_validity_is_answered_on_any_thread_on_the_runs_clock(mock_clock: trio.testing.MockClock) -> None:
    """A transport's reconnect thread asks the fence (its ``Licence``): the answer must come
    from the run's clock without trio context, so that a process resumed past its deadline is
    refused there even before trio has delivered the cancellation."""
    fence = Fence(LEASE, deadline=trio.current_time() + 2)
    assert await trio.to_thread.run_sync(fence.valid)
    mock_clock.jump(2)  # the process "resumes" past its deadline: no task has run since
    assert not await trio.to_thread.run_sync(fence.valid)
    fresh = Fence(LEASE, deadline=trio.current_time() + 2)
    fresh.revoke()
    assert not await trio.to_thread.run_sync(fresh.valid)
