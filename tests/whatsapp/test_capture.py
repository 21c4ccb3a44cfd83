"""Capture lines: round trip, and a clear ValueError for each kind of bad line."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wadaemon.whatsapp import protos as P
from wadaemon.whatsapp.capture import CaptureWriter, decode_capture_line, encode_capture_line
from wadaemon.whatsapp.transport import RawEvent


@given(name=st.text(min_size=1, max_size=30), data=st.binary(max_size=2000))
def test_round_trip(name: str, data: bytes) -> None:
    raw = RawEvent(name, data)
    line = encode_capture_line(raw)
    assert "\n" not in line
    assert decode_capture_line(line) == raw
    assert decode_capture_line(line + "\n") == raw
    assert decode_capture_line(line.encode()) == raw


def test_line_format_is_event_and_base64() -> None:
    raw = P.raw(P.connected())
    assert json.loads(encode_capture_line(raw)) == {"event": "Connected", "data": "CAE="}


@pytest.mark.parametrize(("line", "fragment"), [
    ("", "empty"),
    ("   \n", "empty"),
    ("{not json", "not JSON"),
    ("[1, 2]", "does not match"),
    ('{"event": "Message"}', "does not match"),
    ('{"event": 3, "data": ""}', "does not match"),
    ('{"event": "", "data": ""}', "empty event name"),
    ('{"event": "Message", "data": "***"}', "not base64"),
    ('{"event": "Message", "data": "abc"}', "not base64"),
])
def test_bad_lines(line: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        decode_capture_line(line)


def test_writer_appends_whole_lines_from_threads(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "acc.jsonl"
    writer = CaptureWriter(path)
    raws = [RawEvent("Message", bytes([n]) * 300) for n in range(50)]

    def write(part: list[RawEvent]) -> None:
        for raw in part:
            writer.write(raw)

    threads = [threading.Thread(target=write, args=(raws[n::4],)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    writer.close()
    writer.write(raws[0])  # after close: ignored, not an error
    decoded = [decode_capture_line(line) for line in path.read_text().splitlines()]
    assert sorted(decoded, key=lambda r: r.data) == sorted(raws, key=lambda r: r.data)
    again = CaptureWriter(path)  # reopening appends
    again.write(raws[0])
    again.close()
    assert len(path.read_text().splitlines()) == 51


def test_writer_on_a_full_disk_counts_and_logs_once_per_kind(tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "acc.jsonl"
    path.symlink_to("/dev/full")
    writer = CaptureWriter(path, label="acc")
    with caplog.at_level("WARNING", logger="wadaemon.capture"):
        results = [writer.write(RawEvent("Message", b"x" * 100)) for _ in range(5)]
    assert results == [False] * 5
    assert writer.failures == 5
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "accountId=acc" in warnings[0].getMessage()
    writer.close()
    assert writer.closed


def test_writer_on_a_path_that_cannot_be_opened_resumes_once_fixed(tmp_path: Path) -> None:
    blocker = tmp_path / "dir"
    blocker.write_text("a file where the capture directory should be")
    writer = CaptureWriter(blocker / "acc.jsonl")
    assert writer.write(RawEvent("Message", b"1")) is False
    assert writer.failures == 2  # the open at construction, then again at the write
    blocker.unlink()
    assert writer.write(RawEvent("Message", b"2")) is True
    writer.close()
    assert [decode_capture_line(line) for line in (blocker / "acc.jsonl").read_text().splitlines()] \
        == [RawEvent("Message", b"2")]
