"""Fair share and membership: pure rules, plain numbers for clocks."""

from __future__ import annotations

from collections import Counter
from typing import Any

from msgspec.structs import replace

from wadaemon.cluster.share import FreeSince, Membership, Peer, plan, preferred
from wadaemon.cluster.timing import LeaseTiming
from wadaemon.domain import InstanceDoc, Lease

TIMING = LeaseTiming(lease_ms=3_000, renew_deadline_ms=2_000, retry_period_ms=500)
WALL = 1_700_000_000_000
ACCOUNTS = [f"acct-{i:03}" for i in range(200)]


def peer(name: str, *, settled: bool = True, pinned: frozenset[str] = frozenset(), accepting: bool = True) -> Peer:
    return Peer(name, settled=settled, accepting=accepting, pinned=pinned)


def lease(account: str, owner: str, *, expires: int = WALL + 3_000, epoch: int = 1) -> Lease:
    return Lease(kind="account", key=account, owner_id=owner, expires_at_ms=expires, acquired_at_ms=WALL,
                 epoch=epoch)


def heartbeat(name: str, at: int, *, started: int = WALL - 3_600_000) -> InstanceDoc:
    return InstanceDoc(instance_id=name, heartbeat_at_ms=at, started_at_ms=started, version="t")


def test_rendezvous_shares_evenly_and_moves_only_what_must_move() -> None:
    three = [peer("a"), peer("b"), peer("c")]
    before = {account: preferred(account, three) for account in ACCOUNTS}
    counts = Counter(before.values())
    assert set(counts) == {"a", "b", "c"}
    assert all(45 <= n <= 90 for n in counts.values()), counts  # about 200/3 each
    after = {account: preferred(account, [*three, peer("d")]) for account in ACCOUNTS}
    moved = [a for a in ACCOUNTS if before[a] != after[a]]
    assert all(after[a] == "d" for a in moved)  # only to the newcomer, never among the old ones
    assert 25 <= len(moved) <= 75  # about a quarter


def test_pinned_instance_takes_only_its_accounts_and_others_leave_them() -> None:
    pinned = peer("p", pinned=frozenset({"acct-000"}))
    assert preferred("acct-001", [pinned]) is None
    me = peer("a")
    free = plan(me=me, peers=[pinned], accounts=ACCOUNTS[:2], leases={}, held=[], free_for_ms={}, wall_ms=WALL,
                timing=TIMING)
    assert "acct-001" in free.take
    mine = plan(me=pinned, peers=[me], accounts=ACCOUNTS[:2], leases={}, held=[], free_for_ms={}, wall_ms=WALL,
                timing=TIMING)
    assert "acct-001" not in mine.take


def test_free_account_goes_to_its_preferred_instance_then_to_anyone_after_grace() -> None:
    a, b = peer("a"), peer("b")
    account = next(x for x in ACCOUNTS if preferred(x, [a, b]) == "b")
    args: dict[str, Any] = {"accounts": [account], "leases": {}, "held": [], "wall_ms": WALL, "timing": TIMING}
    assert plan(me=b, peers=[a], free_for_ms={}, **args).take == [account]
    assert plan(me=a, peers=[b], free_for_ms={account: 0}, **args).take == []
    assert plan(me=a, peers=[b], free_for_ms={account: TIMING.orphan_grace_ms}, **args).take == [account]


def test_expired_lease_is_taken_and_its_failed_holder_is_not_preferred() -> None:
    a, b = peer("a"), peer("b")
    account = next(x for x in ACCOUNTS if preferred(x, [a, b]) == "b")
    expired = {account: lease(account, "b", expires=WALL - 1)}
    assert plan(me=a, peers=[b], accounts=[account], leases=expired, held=[], free_for_ms={}, wall_ms=WALL,
                timing=TIMING).take == [account]
    live = {account: lease(account, "b")}
    assert plan(me=a, peers=[b], accounts=[account], leases=live, held=[], free_for_ms={account: 10**9},
                wall_ms=WALL, timing=TIMING).take == []


def test_hand_over_only_to_a_settled_instance() -> None:
    a = peer("a")
    mine = [x for x in ACCOUNTS if preferred(x, [a, peer("b")]) == "b"]
    leases = {x: lease(x, "a") for x in ACCOUNTS}
    args: dict[str, Any] = {"accounts": ACCOUNTS, "leases": leases, "held": ACCOUNTS, "free_for_ms": {}, "wall_ms": WALL,
            "timing": TIMING}
    assert plan(me=a, peers=[peer("b", settled=False)], **args).hand_over == []
    assert plan(me=a, peers=[peer("b")], **args).hand_over == sorted(mine)
    assert plan(me=a, peers=[peer("b", accepting=False)], **args).hand_over == []


def test_a_lease_still_naming_me_after_a_restart_is_taken_back() -> None:
    account = ACCOUNTS[0]
    assert plan(me=peer("a"), peers=[peer("b")], accounts=[account], leases={account: lease(account, "a")},
                held=[], free_for_ms={}, wall_ms=WALL, timing=TIMING).take == [account]


def test_membership_tolerates_jitter_and_declares_death_after_a_lease_without_change() -> None:
    members = Membership("a", TIMING)
    now, wall = 0.0, WALL
    assert members.observe([heartbeat("a", wall), heartbeat("b", wall)], now_ms=now, wall_ms=wall) == [peer("b")]
    # b's heartbeats arrive late and irregularly, but within the lease: alive and settled throughout.
    for step, hb_at in enumerate([WALL + 400, WALL + 1900, WALL + 2000, WALL + 4800]):
        now = (step + 1) * 1_200.0
        assert members.observe([heartbeat("b", hb_at)], now_ms=now, wall_ms=WALL + int(now)) == [peer("b")]
    # no new heartbeat for longer than a lease: dead
    now += TIMING.lease_ms + 1
    assert members.observe([heartbeat("b", WALL + 4800)], now_ms=now, wall_ms=WALL + int(now)) == []
    # a deleted heartbeat (graceful stop) is gone at once
    assert members.observe([], now_ms=now, wall_ms=WALL + int(now)) == []


def test_a_new_instance_settles_after_two_retry_periods() -> None:
    members = Membership("a", TIMING)
    fresh = heartbeat("b", WALL, started=WALL)
    assert members.observe([fresh], now_ms=0, wall_ms=WALL) == [peer("b", settled=False)]
    assert members.observe([replace(fresh, heartbeat_at_ms=WALL + 500)], now_ms=500,
                           wall_ms=WALL + 500) == [peer("b", settled=False)]
    assert members.observe([replace(fresh, heartbeat_at_ms=WALL + 1000)], now_ms=TIMING.settle_ms,
                           wall_ms=WALL + 1000) == [peer("b")]


def test_free_since_counts_from_first_seen_free() -> None:
    free = FreeSince()
    leases = {"x": lease("x", "b", expires=WALL + 100)}
    assert free.update(["x", "y"], leases, now_ms=0, wall_ms=WALL) == {"y": 0}
    assert free.update(["x", "y"], leases, now_ms=300, wall_ms=WALL + 300) == {"x": 0, "y": 300}
    assert free.update(["x", "y"], {"x": lease("x", "c", expires=WALL + 10_000), "y": leases["x"]}, now_ms=400,
                       wall_ms=WALL + 400) == {"y": 400}  # y: still free (its lease expired)
