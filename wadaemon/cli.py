"""``wadaemon`` command line: run, pair, demo, replay, adopt, deadletter, simserver."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import trio

from wadaemon.config import ConfigError, Settings, describe_sources, load_settings, parse_host_port
from wadaemon.logs import setup_logging

if TYPE_CHECKING:
    from wadaemon.daemon import TransportFactory
    from wadaemon.status import AccountStatus
    from wadaemon.store.contract import Store
    from wadaemon.whatsapp.neonize_transport import NeonizeTransport
    from wadaemon.whatsapp.replay import ReplayTransport
    from wadaemon.whatsapp.sessions import Session
    from wadaemon.whatsapp.transport import Licence

log = logging.getLogger("wadaemon.cli")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wadaemon", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="run the daemon for every configured or paired account")
    pair = commands.add_parser("pair", help="link a WhatsApp account (QR code, or pair code with --phone)")
    pair.add_argument("account")
    pair.add_argument("--phone", help="phone number in international format, for a pair code instead of a QR")
    demo = commands.add_parser("demo", help="simulated phones + embedded SQLite store + HTTP")
    demo.add_argument("--accounts", type=int, default=2, help="simulated accounts (default 2)")
    demo.add_argument("--messages", type=int, default=3000, help="history messages per account")
    demo.add_argument("--seconds", type=float, default=0, help="stop after this long (0: until Ctrl-C)")
    replay = commands.add_parser("replay", help="ingest a capture file through the live path")
    replay.add_argument("account")
    replay.add_argument("file", type=Path)
    dead = commands.add_parser("deadletter", help="journal entries the store refused: list, or replay once fixed")
    dead.add_argument("action", choices=["list", "replay"])
    dead.add_argument("account")
    _add_simserver_parser(commands)
    adopt = commands.add_parser("adopt", help="put right what the old backend wrote (a dry run unless --apply)")
    adopt.add_argument("--account", action="append", default=[], help="an account id (repeatable; default: all)")
    adopt.add_argument("--apply", action="store_true", help="write the changes (default: report only)")
    adopt.add_argument("--rate", type=float, default=500.0, help="store operations per second at most (default 500)")
    adopt.add_argument("--json", action="store_true", help="print the report as JSON lines")
    args = parser.parse_args(argv)

    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"wadaemon: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.instance_id, settings.log_level)
    log.info("[config] %s", settings.describe())
    log.info("[config] %s", describe_sources())
    if args.command == "run":
        return _run(settings)
    if args.command == "pair":
        return _pair(settings, args.account, args.phone)
    if args.command == "simserver":
        return _simserver(args)
    if args.command == "demo":
        from wadaemon.demo import run_demo

        exit_code: int = trio.run(run_demo, settings, args.accounts, args.messages, args.seconds)
        return exit_code
    if args.command == "deadletter":
        return _dead_letters(settings, args.action, args.account)
    if args.command == "adopt":
        return _adopt(settings, args.account, apply=args.apply, rate=args.rate, as_json=args.json)
    return _replay(settings, args.account, args.file)


def _add_simserver_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sim = commands.add_parser("simserver", help="a simulated WhatsApp service on loopback (docs/simserver.md)")
    sim.add_argument("--listen", type=_listen_address, default=("127.0.0.1", 0),
                     help="host:port for daemons (WADAEMON_SIMSERVER); port 0: any free port (default)")
    sim.add_argument("--control", type=_listen_address, default=None,
                     help="host:port of the HTTP control API (default: same host, any free port)")
    sim.add_argument("--accounts", type=_account_ids, default=("sim-1",),
                     help="a count (3: sim-1..sim-3) or a comma list of ids (default sim-1)")
    sim.add_argument("--seed", type=int, default=1, help="content seed; the same seed, the same phones")
    sim.add_argument("--chats", type=int, default=12, help="chats per phone (default 12)")
    sim.add_argument("--history", type=int, default=240, help="messages each phone holds (default 240)")
    sim.add_argument("--pairing-history", type=int, default=None, metavar="N",
                     help="newest N messages per chat in the pairing history; the rest only by "
                          "on-demand request (default: all)")
    sim.add_argument("--chunk-size", type=int, default=500, help="messages per pairing history chunk")
    sim.add_argument("--rate", type=float, default=0.0,
                     help="live traffic events/s per account from the start (default 0: none)")
    sim.add_argument("--offline-cap", type=int, default=10_000,
                     help="events held per account while no device is connected (default 10000)")
    sim.add_argument("--history-delay-ms", type=int, default=0,
                     help="delay before answering an on-demand history request (default 0)")
    sim.add_argument("--wall-clock", type=int, choices=(0, 1), default=0,
                     help="1: live messages carry wall-clock timestamps, as on WhatsApp (default 0: "
                          "a simulated clock, deterministic)")
    sim.add_argument("--ack-timeout", type=float, default=30.0,
                     help="seconds a client may take to ack an event before it is closed (default 30)")


def _listen_address(text: str) -> tuple[str, int]:
    try:
        return parse_host_port(text, allow_zero=True)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: expected {exc}") from None


def _account_ids(text: str) -> tuple[str, ...]:
    if text.strip().isdigit() and int(text) > 0:
        return tuple(f"sim-{n}" for n in range(1, int(text) + 1))
    ids = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not ids or any("/" in i or i.startswith(".") for i in ids):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive count or a comma list of ids")
    return ids


def _simserver(args: argparse.Namespace) -> int:
    from wadaemon.whatsapp.simserver import ServiceOptions, serve

    host, port = args.listen
    control_host, control_port = args.control or (host, 0)
    if control_host != host:
        print("wadaemon simserver: --listen and --control must share a host", file=sys.stderr)
        return 2
    serve(ServiceOptions(
        host=host, port=port, control_port=control_port, accounts=args.accounts, seed=args.seed,
        chats=args.chats, history=args.history, pairing_history=args.pairing_history,
        chunk_size=args.chunk_size, rate=args.rate, offline_cap=args.offline_cap,
        history_delay_ms=args.history_delay_ms, ack_timeout_s=args.ack_timeout,
        wall_clock=bool(args.wall_clock),
    ), announce=lambda line: print(line, flush=True))
    return 0


def _adopt(settings: Settings, accounts: list[str], *, apply: bool, rate: float, as_json: bool) -> int:
    from wadaemon.adopt.runner import Adopter, Progress, format_report
    from wadaemon.store import open_store
    from wadaemon.store.legacy import open_legacy
    from wadaemon.whatsapp.sessions import open_sessions

    store = open_store(settings)
    try:
        legacy = open_legacy(store)
        if legacy is None:
            print("wadaemon adopt: the embedded store holds no legacy data (the old backend only wrote "
                  "Firestore): nothing to adopt", file=sys.stderr)
            return 0
        sessions = open_sessions(settings)

        shown = [0.0]

        def progress(p: Progress) -> None:
            if time.monotonic() - shown[0] < 1.0 and p.threads_done < p.threads_total:
                return
            shown[0] = time.monotonic()
            eta = f", about {p.eta_s:.0f} s left" if p.eta_s is not None else ""
            print(f"adopt {p.account_id}: {p.phase} {p.threads_done}/{p.threads_total} threads, "
                  f"{p.documents} documents, {p.writes} writes{eta}", file=sys.stderr, flush=True)

        adopter = Adopter(legacy, apply=apply, rate=rate, progress=progress,
                          lid_map=sessions.lid_mappings)
        reports = []
        for account in accounts or legacy.account_ids():
            report = adopter.adopt_account(account)
            reports.append(report)
            if as_json:
                print(msgspec.json.encode(report).decode(), flush=True)
        if not as_json:
            print(format_report(reports))
        return 0
    finally:
        store.close()


def _run(settings: Settings) -> int:
    transport: TransportFactory
    accounts: Callable[[], list[str]]
    if settings.simserver is not None:
        from wadaemon.whatsapp.simclient import SimServerTransport, service_accounts
        from wadaemon.whatsapp.transport import TransportError

        address = settings.simserver
        try:
            served = list(settings.accounts) or service_accounts(address, settings.instance_id)
        except (OSError, TransportError) as exc:
            print(f"wadaemon: cannot list the accounts of the simulated service at {address[0]}:{address[1]}"
                  f" (set WADAEMON_ACCOUNTS, or start it first): {exc}", file=sys.stderr)
            return 2

        def accounts() -> list[str]:
            return served

        def transport(account_id: str, licence: Licence) -> SimServerTransport:
            return SimServerTransport(account_id, address, settings.instance_id, licence)
    else:
        from wadaemon.whatsapp.sessions import open_sessions

        sessions = open_sessions(settings)

        def accounts() -> list[str]:
            """Re-read every retry period: a session paired meanwhile is picked up."""
            return list(settings.accounts) or sessions.paired_accounts()

        def transport(account_id: str, licence: Licence) -> NeonizeTransport:
            return neonize_transport(settings, account_id, sessions.session(account_id), licence)

    if not accounts():
        log.warning("no accounts: pair one with `wadaemon pair ACCOUNT` or set WADAEMON_ACCOUNTS; running passive")
    run_daemon(settings, accounts, transport)
    return 0


def neonize_transport(settings: Settings, account_id: str, session: Session | None = None,
                      licence: Licence | None = None) -> NeonizeTransport:
    """The real WhatsApp transport of an account, as configured (the one place that says how);
    ``session`` defaults to the account's in the configured session store; ``licence`` (the
    lease's fence, in the daemon) gates the transport's own reconnects."""
    from wadaemon.whatsapp.neonize_transport import NeonizeTransport
    from wadaemon.whatsapp.sessions import open_sessions
    from wadaemon.whatsapp.transport import unconditional

    if session is None:
        session = open_sessions(settings).session(account_id)
    return NeonizeTransport(
        account_id, session, licence=licence or unconditional,
        full_history=settings.sync_full_history, full_sync_days=settings.history_sync_days,
        full_sync_size_mb=settings.history_sync_size_mb, full_sync_quota_mb=settings.history_sync_quota_mb)


def run_daemon(settings: Settings, accounts: Callable[[], list[str]], transport: TransportFactory) -> None:
    """``wadaemon run`` once its accounts and transports are chosen: the daemon until a signal,
    then the store closed (bounded, so a frozen store cannot hold the exit)."""
    from wadaemon.daemon import Daemon
    from wadaemon.store import close_store, open_store

    store = open_store(settings)
    if store.backend == "firestore":
        from wadaemon.adopt.runner import warn_if_unadopted

        warn_if_unadopted(store, accounts())

    daemon = Daemon(settings, store, accounts, transport)
    try:
        trio.run(daemon.run)
    finally:
        close_store(store)


def _pair(settings: Settings, account_id: str, phone: str | None) -> int:
    transport = neonize_transport(settings, account_id)

    def show_code(code: str) -> None:
        print(f"On the phone: WhatsApp > Linked devices > Link with phone number, enter: {code}", flush=True)

    paired = transport.pair(phone, on_code=show_code)
    print(f"paired {account_id} as {paired}" if paired else f"pairing {account_id} did not complete")
    return 0 if paired else 1


class LineRejection(msgspec.Struct):
    line: int
    reason: str


class ReplayReport(msgspec.Struct, rename="camel"):
    account: str
    file: str
    delivered: int
    skipped_lines: int
    messages_written: int
    history_saved: int
    rejected: int
    pending_updates: int
    #: Every capture line skipped or (partly) rejected: ``{line, reason}``, in file order.
    rejections: list[LineRejection]


async def drain(settings: Settings, store: Store, account_id: str,
                transport: ReplayTransport) -> tuple[AccountStatus | None, bool]:
    """Run one account's pipeline (no HTTP) until ``transport`` has played everything and the
    journal is drained, then stop: the account's final status (None when another instance holds
    the account's ownership lease: then nothing ran), and whether a signal (SIGINT, SIGTERM)
    ended it first — then what was not drained stays journaled for the next run."""
    from wadaemon.daemon import Daemon

    daemon = Daemon(settings, store, [account_id], lambda _account, _licence: transport, serve=False)
    status = daemon.board.account(account_id)  # kept: the board forgets an account once stopped
    interrupted = True
    owned = False
    async with trio.open_nursery() as nursery:

        async def daemon_then_stop(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            await daemon.run(task_status=task_status)
            nursery.cancel_scope.cancel()  # stopped by a signal: stop waiting for the drain

        await nursery.start(daemon_then_stop)
        runtime = daemon.accounts.get(account_id)
        owned = runtime is not None
        if runtime is not None:
            await trio.to_thread.run_sync(transport.finished.wait, abandon_on_cancel=True)
            await runtime.wait_drained()
        interrupted = False
        daemon.stop()
    return (status if owned else None), interrupted


INTERRUPTED = ("wadaemon: interrupted before the journal was drained; what is left stays in the"
               " journal and is ingested by the next run")


def _not_owned(account_id: str) -> int:
    print(f"wadaemon: account {account_id} could not be taken here: another instance holds its ownership "
          "lease (stop that instance first), or the store did not answer (see the log above); "
          "nothing was read from the input", file=sys.stderr)
    return 2


class DeadLetterLine(msgspec.Struct, rename="camel"):
    seq: int
    event: str
    bytes: int
    received_ms: int
    set_aside_ms: int
    error: str


def _dead_letters(settings: Settings, action: str, account_id: str) -> int:
    """``list``: one JSON line per dead letter. ``replay``: put them back in the journal and
    drain it through the pipeline (stop the daemon running this account first: the journal has
    one writer)."""
    from wadaemon.journal import Journal
    from wadaemon.store import close_store, open_store
    from wadaemon.whatsapp.replay import ReplayTransport

    path = settings.data_dir / "journal" / f"{account_id}.sqlite"
    if not path.is_file():
        print(f"wadaemon deadletter: no journal for {account_id} at {path}", file=sys.stderr)
        return 2
    journal = Journal(path, max_backlog=1 << 30)
    try:
        if action == "list":
            for letter in journal.dead_letters():
                print(msgspec.json.encode(DeadLetterLine(
                    seq=letter.seq, event=letter.raw.name, bytes=len(letter.raw.data),
                    received_ms=letter.received_ms, set_aside_ms=letter.set_aside_ms,
                    error=letter.error)).decode())
            return 0
        restored = journal.restore_dead_letters()
    finally:
        journal.close()
    store = open_store(settings)
    try:
        status, interrupted = trio.run(drain, settings, store, account_id, ReplayTransport(account_id, None))
    finally:
        close_store(store)
    if status is None:
        return _not_owned(account_id)
    if interrupted:
        print(INTERRUPTED, file=sys.stderr)
        return 130
    print(msgspec.json.encode({"account": account_id, "restored": restored,
                               "deadLetters": status.dead_letters}).decode())
    return 1 if status.dead_letters else 0


def _replay(settings: Settings, account_id: str, path: Path) -> int:
    from wadaemon.store import close_store, open_store
    from wadaemon.whatsapp.replay import ReplayTransport

    if not path.is_file():
        print(f"wadaemon replay: no such file: {path}", file=sys.stderr)
        return 2
    store = open_store(settings)
    transport = ReplayTransport(account_id, path)
    try:
        status, interrupted = trio.run(drain, settings, store, account_id, transport)
    finally:
        close_store(store)
    if status is None:
        return _not_owned(account_id)
    report = ReplayReport(
        account=account_id, file=str(path), delivered=transport.delivered,
        skipped_lines=len(transport.bad_lines), messages_written=status.realtime_written,
        history_saved=status.history.saved_by_this_run, rejected=status.rejected,
        pending_updates=status.pending_receipts + status.pending_mutations,
        rejections=[LineRejection(n, r) for n, r in sorted(transport.bad_lines + transport.rejected_lines)],
    )
    print(msgspec.json.encode(report).decode())
    for number, reason in transport.bad_lines:
        print(f"{path}:{number}: skipped: {reason}", file=sys.stderr)
    for number, reason in transport.rejected_lines:
        print(f"{path}:{number}: rejected: {reason}", file=sys.stderr)
    if interrupted:
        print(INTERRUPTED, file=sys.stderr)
        return 130
    return 1 if transport.bad_lines or transport.rejected_lines else 0


if __name__ == "__main__":
    raise SystemExit(main())
