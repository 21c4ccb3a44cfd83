"""Bad clients of the simulated service: garbage, a disconnect mid-frame, a client that never
reads. Each is closed with its reason logged; a daemon on another account notices nothing and
the misbehaving account loses nothing. One service and one daemon serve the whole module (each
test uses accounts of its own), to keep the module's wall time small."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.procs import DaemonSet, SimServer, wait_until
from wadaemon.whatsapp import simwire as W
from wadaemon.whatsapp.simclient import read_frame

pytestmark = pytest.mark.slow

GOOD, DEAF, CALLER = "sim-1", "sim-2", "sim-3"


@contextmanager
def raw_client(sim: SimServer) -> Iterator[socket.socket]:
    sock = socket.create_connection((sim.host, sim.port), timeout=10)
    try:
        yield sock
    finally:
        sock.close()


def closed_by_service(sock: socket.socket) -> bool:
    """True once the service closed this connection (frames it sent first are skipped)."""
    try:
        while read_frame(sock) is not None:
            pass
    except (ConnectionError, OSError):
        pass
    return True


def logged(sim: SimServer, text: str) -> bool:
    return text in sim.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def sim_with_good_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SimServer, DaemonSet]]:
    workdir = tmp_path_factory.mktemp("faults")
    sim = SimServer(workdir, ["--accounts", "3", "--chats", "3", "--history", "12", "--ack-timeout", "1"])
    daemons = DaemonSet(workdir / "daemons")
    try:
        daemons.start("inst-a", sim, accounts=[GOOD])
        wait_until(lambda: daemons.message_ids(GOOD) == sim.truth(GOOD).ids(), "the good account synced",
                   logs=daemons.logs())
        yield sim, daemons
    finally:
        daemons.cleanup()
        sim.proc.cleanup()


def still_flows(sim: SimServer, daemons: DaemonSet) -> None:
    message_id = sim.inject(GOOD, chat=0, text="still here")
    wait_until(lambda: message_id in daemons.message_ids(GOOD), "the good account still ingests",
               logs=[*daemons.logs(), sim.log])


def test_garbage_closes_only_that_connection(sim_with_good_daemon: tuple[SimServer, DaemonSet]) -> None:
    sim, daemons = sim_with_good_daemon
    with raw_client(sim) as sock:
        sock.sendall(b"\x00\x00\x00\x05hello")  # a length and a body that is not msgpack of a frame
        assert closed_by_service(sock)
    with raw_client(sim) as sock:
        sock.sendall(b"\xff\xff\xff\xff")  # a length beyond MAX_FRAME: never buffered
        assert closed_by_service(sock)
    with raw_client(sim) as sock:
        sock.sendall(W.encode(W.Ack(1)))  # a valid frame, but not a hello
        assert closed_by_service(sock)
    wait_until(lambda: logged(sim, "closed: bad frame: undecodable frame"), "garbage logged")
    wait_until(lambda: logged(sim, "closed: bad frame: frame length 4294967295 outside"), "length logged")
    wait_until(lambda: logged(sim, "closed: bad frame: expected hello, got Ack"), "no hello logged")
    still_flows(sim, daemons)
    assert sim.summary(GOOD).replacements == 0


def test_disconnect_mid_frame_is_logged_and_harmless(sim_with_good_daemon: tuple[SimServer, DaemonSet]) -> None:
    sim, daemons = sim_with_good_daemon
    frame = W.encode(W.Hello(DEAF, "half"))
    with raw_client(sim) as sock:
        sock.sendall(frame[: len(frame) // 2])
    wait_until(lambda: logged(sim, "client=- closed: the client disconnected mid-frame"), "mid-frame logged")
    still_flows(sim, daemons)


def test_unknown_account_is_refused_with_a_reason(sim_with_good_daemon: tuple[SimServer, DaemonSet]) -> None:
    sim, _ = sim_with_good_daemon
    with raw_client(sim) as sock:
        sock.sendall(W.encode(W.Hello("nobody", "x")))
        assert read_frame(sock) == W.Bye("unknown account 'nobody'")
        assert read_frame(sock) is None


def test_bad_call_gets_an_error_reply_and_the_connection_stays(
        sim_with_good_daemon: tuple[SimServer, DaemonSet]) -> None:
    sim, _ = sim_with_good_daemon
    with raw_client(sim) as sock:
        sock.sendall(W.encode(W.Hello(CALLER, "caller")))
        assert isinstance(read_frame(sock), W.Welcome)
        sock.sendall(W.encode(W.Call(1, "send_text", {"to": 5})))
        sock.sendall(W.encode(W.Call(2, "teleport", {})))
        sock.sendall(W.encode(W.Call(3, "resolve_lid", {"lid": "1@lid"})))
        sock.sendall(W.encode(W.Call(4, "group_info", {"group": "120363999999999999@g.us"})))
        replies: dict[int, W.Reply] = {}
        while len(replies) < 4:
            frame = read_frame(sock)
            if isinstance(frame, W.Event):
                sock.sendall(W.encode(W.Ack(frame.seq)))
            elif isinstance(frame, W.Reply):
                replies[frame.id] = frame
    assert (replies[1].ok, replies[1].kind) == (False, "bad_request")
    assert "Expected `str`, got `int`" in replies[1].error
    assert (replies[2].kind, replies[2].error) == ("bad_request", "unknown call 'teleport'")
    assert replies[3] == W.Reply(id=3, ok=True, result={"pn": ""})
    assert (replies[4].ok, replies[4].kind) == (False, "transport")  # routed to the phone: no such group
    assert "item-not-found" in replies[4].error


def test_client_that_never_reads_is_closed_and_loses_nothing(
        sim_with_good_daemon: tuple[SimServer, DaemonSet]) -> None:
    sim, daemons = sim_with_good_daemon
    with raw_client(sim) as sock:
        sock.sendall(W.encode(W.Hello(DEAF, "deaf")))  # and then never reads, never acks
        wait_until(lambda: logged(sim, "client=deaf closed: no ack within 1s"), "the deaf client closed",
                   logs=[sim.log])
        still_flows(sim, daemons)
    assert sim.truth(DEAF).delivered_ids() == set()  # nothing was acked, so nothing counts as delivered
    daemons.start("inst-b", sim, accounts=[DEAF])
    wait_until(lambda: daemons.message_ids(DEAF) == sim.truth(DEAF).ids(),
               "the next device gets everything the deaf one never acked", logs=daemons.logs())
