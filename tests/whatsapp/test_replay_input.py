"""Hostile capture files: one bad line never costs the rest, and the summary names every line
that was skipped or rejected, by capture line number."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from tests.spine.harness import dump
from wadaemon.cli import main as cli_main
from wadaemon.store.sqlite import SqliteStore
from wadaemon.whatsapp import protos as P
from wadaemon.whatsapp.capture import encode_capture_line
from wadaemon.whatsapp.simphone import SimPhone

ACCOUNT = "acct"
PN = "40712345678@s.whatsapp.net"
GARBAGE = ["garbage@", "@s.whatsapp.net", "123@unknown.server", "../../x@s.whatsapp.net"]


def message_line(chat: str, message_id: str) -> str:
    event = P.message_event(chat=PN, sender=PN, message_id=message_id, content=P.text("hi"), ts_ms=1_700_000_000_000)
    user, _, server = chat.partition("@")
    event.Info.MessageSource.Chat.User, event.Info.MessageSource.Chat.Server = user, server
    return encode_capture_line(P.raw(event))


def test_hostile_capture_lines_are_reported_by_line_and_the_rest_lands(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    history = [encode_capture_line(raw) for raw in
               SimPhone(ACCOUNT, seed=4, chats=5, history_messages=100, chunk_size=30).pairing_history()]
    lines: list[bytes] = [line.encode() for line in history]
    lines[0] = b"\xef\xbb\xbf" + lines[0]  # a BOM on line 1 (it carries LID mappings too)
    lines.insert(2, b'{"event": "Message", "data": "\xff\xfe not utf-8"}')  # line 3
    garbage_from = len(lines) + 1
    lines += [message_line(chat, f"3AG{n}").encode() for n, chat in enumerate(GARBAGE)]
    lines.append(message_line(PN, "3AGOOD").encode())
    capture = tmp_path / "capture.jsonl"
    capture.write_bytes(b"\n".join(lines) + b"\n")
    monkeypatch.setenv("WADAEMON_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)

    assert cli_main(["replay", ACCOUNT, str(capture)]) == 1
    out, err = capsys.readouterr()
    report = msgspec.json.decode(out.strip().splitlines()[-1])
    lines_reported = [r["line"] for r in report["rejections"]]
    assert lines_reported == [3, *range(garbage_from, garbage_from + len(GARBAGE))]
    assert "not UTF-8" in report["rejections"][0]["reason"]
    assert f"{capture}:3: skipped" in err and f"{capture}:{garbage_from}: rejected" in err
    store = SqliteStore(tmp_path / "data" / "wadaemon.sqlite")
    stored = {m.id for _, (_, ms) in dump(store, ACCOUNT).items() for m in ms}
    assert len(stored) == 101 and "3AGOOD" in stored  # the BOM line and everything after landed
    assert not any(t.startswith(f"{ACCOUNT}__") and "unknown" in t for t in dump(store, ACCOUNT))
    store.close()
