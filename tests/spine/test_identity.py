"""One thread per person: normalisation, canonical JIDs, merges due when a LID resolves."""

from __future__ import annotations

import pytest

from wadaemon.domain import ChatAddress, LidMapping
from wadaemon.identity import IdentityResolver, normalise_jid, phone_e164

PN = "40712345678@s.whatsapp.net"
LID = "123456789012345@lid"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("40712345678:12@s.whatsapp.net", PN),
        ("40712345678.0:3@s.whatsapp.net", PN),
        ("123456789012345:7@lid", LID),
        ("40712345678@c.us", PN),
        ("120363000000000000@g.us", "120363000000000000@g.us"),
        ("status@broadcast", "status@broadcast"),
    ],
)
def test_device_suffixes_never_reach_a_thread_id(raw: str, expected: str) -> None:
    assert normalise_jid(raw) == expected


def test_phone_e164_only_for_phone_number_jids() -> None:
    assert phone_e164(PN) == "+40712345678"
    assert phone_e164(LID) == ""
    assert phone_e164("120363@g.us") == ""


def test_lid_is_canonicalised_once_its_phone_number_is_known() -> None:
    resolver = IdentityResolver()
    assert resolver.canonical(LID) == LID
    resolver.learn_address(ChatAddress(jid=LID + "", alt_jid="40712345678:3@s.whatsapp.net"))
    assert resolver.canonical("123456789012345:9@lid") == PN


def test_learning_works_whichever_way_round_the_pair_came() -> None:
    resolver = IdentityResolver()
    resolver.learn_address(ChatAddress(jid=PN, alt_jid=LID))
    assert resolver.canonical(LID) == PN


def test_a_written_lid_thread_becomes_a_merge_when_resolved_and_only_once() -> None:
    resolver = IdentityResolver()
    resolver.note_thread(LID)
    assert resolver.learn([LidMapping(lid=LID, pn=PN)]) == [LidMapping(lid=LID, pn=PN)]
    assert resolver.learn([LidMapping(lid=LID, pn=PN)]) == []


def test_unwritten_lid_threads_need_no_merge() -> None:
    resolver = IdentityResolver()
    assert resolver.learn([LidMapping(lid=LID, pn=PN)]) == []


def test_the_client_lid_store_is_asked_once_per_unknown_lid() -> None:
    asked: list[str] = []

    def lookup(lid: str) -> str:
        asked.append(lid)
        return PN

    resolver = IdentityResolver(lookup)
    assert resolver.canonical(LID) == PN
    assert resolver.canonical(LID) == PN
    assert asked == [LID]


def test_nonsense_mappings_are_ignored() -> None:
    resolver = IdentityResolver()
    resolver.learn([LidMapping(lid=PN, pn=LID), LidMapping(lid="x", pn="y")])
    assert resolver.known() == 0
