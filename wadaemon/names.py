"""The best name known for each chat of one account, learned as events pass.

WhatsApp tells a chat's name in pieces, at different times: a history conversation carries the
contact's saved name or the group's subject; a PUSH_NAME history chunk, often the last, carries
the names people chose for themselves; a live message carries its sender's push name (or a
business's verified name); a group's subject comes with a group-change event, or only when
asked. A thread is written as soon as its first message commits, so whatever name is known
then is used, and names learned later are written to the threads that exist.

Order of preference: a group's subject; for a person, the saved contact name, then the newest
push name. Group subjects are also *asked* of WhatsApp (``Transport.group_info``) for a group
first seen through a live message; ``wants_subject`` says when, at most once per ``retry_s``
per group, so a failing lookup is retried later instead of on every message. Times come from
the caller (trio's clock in the actors), so MockClock tests drive it. Not thread-safe: owned
by the account's trio actors, like the identity resolver.
"""

from __future__ import annotations

from collections.abc import Iterable

from wadaemon.store.merge import placeholder_name

#: A group whose subject could not be fetched is asked again after this long.
SUBJECT_RETRY_S = 600.0


class NameBook:
    def __init__(self, *, retry_s: float = SUBJECT_RETRY_S) -> None:
        self._subjects: dict[str, str] = {}
        self._contacts: dict[str, str] = {}
        self._pushnames: dict[str, str] = {}
        self._asked: dict[str, float] = {}
        self._retry_s = retry_s

    def learn_subject(self, group_jid: str, subject: str) -> None:
        if subject and subject != placeholder_name(group_jid):
            self._subjects[group_jid] = subject

    def learn_contact(self, jid: str, name: str) -> None:
        if name and name != placeholder_name(jid):
            self._contacts[jid] = name

    def learn_pushname(self, jid: str, name: str) -> None:
        if name and name != placeholder_name(jid):
            self._pushnames[jid] = name

    def name_of(self, jid: str) -> str:
        return self._subjects.get(jid) or self._contacts.get(jid) or self._pushnames.get(jid, "")

    def names_of(self, jids: Iterable[str]) -> dict[str, str]:
        """The known names of ``jids`` (those without one left out)."""
        return {jid: name for jid in jids if (name := self.name_of(jid))}

    def forget_asks(self) -> None:
        """The pipeline restarted and replays the journal: lookups in flight were lost."""
        self._asked.clear()

    def wants_subject(self, group_jid: str, now: float) -> bool:
        """True when the group's subject is unknown and was not asked within ``retry_s``; the
        caller then asks, and this counts as the attempt."""
        if not group_jid.endswith("@g.us") or group_jid in self._subjects:
            return False
        asked = self._asked.get(group_jid)
        if asked is not None and now - asked < self._retry_s:
            return False
        self._asked[group_jid] = now
        return True
