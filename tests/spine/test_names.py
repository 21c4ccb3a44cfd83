"""The NameBook: which name a thread gets, and when a group's subject is asked of WhatsApp."""

from __future__ import annotations

from wadaemon.names import NameBook
from wadaemon.store.merge import placeholder_name

GROUP = "120363000000000001@g.us"
PERSON = "40711111111@s.whatsapp.net"


def test_subject_then_contact_then_newest_push_name() -> None:
    book = NameBook()
    book.learn_pushname(PERSON, "ana")
    assert book.name_of(PERSON) == "ana"
    book.learn_pushname(PERSON, "Ana P.")
    assert book.name_of(PERSON) == "Ana P."
    book.learn_contact(PERSON, "Ana Popescu")
    book.learn_pushname(PERSON, "ana again")
    assert book.name_of(PERSON) == "Ana Popescu"
    book.learn_subject(GROUP, "Team")
    assert book.names_of([GROUP, PERSON, "x@lid"]) == {GROUP: "Team", PERSON: "Ana Popescu"}


def test_placeholders_and_empty_names_are_never_learned() -> None:
    book = NameBook()
    book.learn_subject(GROUP, placeholder_name(GROUP))
    book.learn_pushname(PERSON, "")
    assert book.names_of([GROUP, PERSON]) == {}


def test_an_unknown_subject_is_asked_once_then_again_after_the_retry_time() -> None:
    book = NameBook(retry_s=600)
    assert book.wants_subject(GROUP, now=0.0)
    assert not book.wants_subject(GROUP, now=1.0)  # asked already: not on every message
    assert not book.wants_subject(GROUP, now=599.0)
    assert book.wants_subject(GROUP, now=600.0)  # the lookup failed: ask again
    book.forget_asks()  # the pipeline restarted: the replayed message asks again
    assert book.wants_subject(GROUP, now=601.0)
    book.learn_subject(GROUP, "Team")
    assert not book.wants_subject(GROUP, now=10_000.0)
    assert not book.wants_subject(PERSON, now=0.0)  # only groups have subjects
