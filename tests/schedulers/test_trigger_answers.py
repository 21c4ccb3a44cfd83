"""The scheduler's manual-trigger outcomes as the HTTP API answers them (``control.backfill_trigger``)."""

from __future__ import annotations

import pytest

from wadaemon.control import backfill_trigger
from wadaemon.http.control import AccountNotHere, BackfillStart, BackfillUnavailable, NotConnected
from wadaemon.schedulers.view import TriggerOutcome


class Scheduler:
    def __init__(self, outcome: TriggerOutcome) -> None:
        self.outcome = outcome

    async def trigger_backfill(self, account_id: str) -> TriggerOutcome:
        return self.outcome


@pytest.mark.parametrize(("outcome", "answer"), [
    ("started", BackfillStart(True, "started")),
    ("queued", BackfillStart(True, "queued")),
    ("running", BackfillStart(False, "running")),
    ("running_elsewhere", BackfillStart(False, "running_elsewhere")),
])
async def test_starts_and_already_running(outcome: TriggerOutcome, answer: BackfillStart) -> None:
    assert await backfill_trigger(Scheduler(outcome), lambda a: "connected")("a") == answer


@pytest.mark.parametrize(("outcome", "error"), [
    ("unavailable", BackfillUnavailable), ("not_connected", NotConnected), ("unknown_account", AccountNotHere),
])
async def test_refusals(outcome: TriggerOutcome, error: type[Exception]) -> None:
    with pytest.raises(error):
        await backfill_trigger(Scheduler(outcome), lambda a: "disconnected")("a")
