"""One thread per person (docs/data-model.md, identity): canonical chat JIDs and LID -> phone-number resolution.

WhatsApp addresses a person by phone number (``…@s.whatsapp.net``) or by LID (``…@lid``).
The canonical JID of a chat is the phone-number JID whenever the mapping is known. Mappings
arrive from several places — an event's alternate JID, history sync's ``pnJID``/``lidJID`` and
``phoneNumberToLidMappings``, and the client's own LID store — and sometimes only *after* a
thread was already filed under the LID. The resolver therefore also remembers which LID
threads it has written, so that learning their mapping later yields a merge to perform.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from wadaemon.domain import ChatAddress, LidMapping

PN_SERVER = "s.whatsapp.net"
LID_SERVER = "lid"
GROUP_SERVER = "g.us"


def normalise_jid(jid: str) -> str:
    """``user:device@server`` / ``user.agent:device@server`` -> ``user@server``; the legacy
    ``c.us`` server becomes ``s.whatsapp.net``."""
    if "@" not in jid:
        return jid
    user, server = jid.split("@", 1)
    user = user.split(":", 1)[0]
    if server in (PN_SERVER, LID_SERVER):
        user = user.split(".", 1)[0]
    if server == "c.us":
        server = PN_SERVER
    return f"{user}@{server}"


def is_lid(jid: str) -> bool:
    return jid.endswith("@" + LID_SERVER)


def is_pn(jid: str) -> bool:
    return jid.endswith("@" + PN_SERVER)


def phone_e164(jid: str) -> str:
    """``+40712345678`` for a phone-number JID, "" otherwise."""
    if not is_pn(jid):
        return ""
    user = jid.split("@", 1)[0]
    return f"+{user}" if user.isdigit() else ""


class IdentityResolver:
    """Per-account LID <-> phone-number map and the canonical-JID rule.

    ``lookup`` is the transport's LID store (``Transport.resolve_lid``), asked only for LIDs
    this resolver does not know yet; its answers are cached. Not thread-safe: owned by the
    account's trio actors.
    """

    def __init__(self, lookup: Callable[[str], str] | None = None) -> None:
        self._pn_of: dict[str, str] = {}
        self._lookup = lookup
        self._asked: set[str] = set()
        self._lid_threads: set[str] = set()

    def learn(self, mappings: Iterable[LidMapping]) -> list[LidMapping]:
        """Record mappings; returns those that resolve a LID thread already written (merges due)."""
        merges: list[LidMapping] = []
        for mapping in mappings:
            lid, pn = normalise_jid(mapping.lid), normalise_jid(mapping.pn)
            if not (is_lid(lid) and is_pn(pn)) or self._pn_of.get(lid) == pn:
                continue
            self._pn_of[lid] = pn
            if lid in self._lid_threads:
                self._lid_threads.discard(lid)
                merges.append(LidMapping(lid=lid, pn=pn))
        return merges

    def learn_address(self, address: ChatAddress) -> list[LidMapping]:
        """Learn from an event's (jid, alt_jid) pair, whichever way round it came."""
        jid, alt = normalise_jid(address.jid), normalise_jid(address.alt_jid)
        if is_lid(jid) and is_pn(alt):
            return self.learn([LidMapping(lid=jid, pn=alt)])
        if is_pn(jid) and is_lid(alt):
            return self.learn([LidMapping(lid=alt, pn=jid)])
        return []

    def canonical(self, jid: str) -> str:
        """The phone-number JID for a known LID; any other JID normalised as is."""
        jid = normalise_jid(jid)
        if not is_lid(jid):
            return jid
        pn = self._pn_of.get(jid)
        if pn is None and self._lookup is not None and jid not in self._asked:
            self._asked.add(jid)
            found = normalise_jid(self._lookup(jid) or "")
            if is_pn(found):
                pn = self._pn_of[jid] = found
        return pn or jid

    def canonical_chat(self, address: ChatAddress) -> str:
        """Canonical JID of a chat address, learning from it first."""
        self.learn_address(address)
        return self.canonical(address.jid)

    def note_thread(self, client_jid: str) -> None:
        """A thread was written under ``client_jid``; if it is a LID, a later mapping merges it."""
        if is_lid(client_jid):
            self._lid_threads.add(client_jid)

    def is_lid_thread(self, jid: str) -> bool:
        """A LID thread was written under ``jid`` and its phone number is not known yet."""
        return jid in self._lid_threads

    def known(self) -> int:
        return len(self._pn_of)
