"""``wadaemon`` command line: run, pair, demo, replay."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import msgspec
import trio

from wadaemon.config import ConfigError, Settings, load_settings
from wadaemon.logs import setup_logging

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
    args = parser.parse_args(argv)

    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"wadaemon: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.instance_id, settings.log_level)
    if args.command == "run":
        return _run(settings)
    if args.command == "pair":
        return _pair(settings, args.account, args.phone)
    if args.command == "demo":
        from wadaemon.demo import run_demo

        exit_code: int = trio.run(run_demo, settings, args.accounts, args.messages, args.seconds)
        return exit_code
    return _replay(settings, args.account, args.file)


def _run(settings: Settings) -> int:
    from wadaemon.daemon import Daemon
    from wadaemon.store import open_store
    from wadaemon.whatsapp.neonize_transport import NeonizeTransport
    from wadaemon.whatsapp.sessions import open_sessions

    sessions = open_sessions(settings)

    def accounts() -> list[str]:
        """Re-read every retry period: a session paired meanwhile is picked up."""
        return list(settings.accounts) or sessions.paired_accounts()

    if not accounts():
        log.warning("no accounts: pair one with `wadaemon pair ACCOUNT` or set WADAEMON_ACCOUNTS; running passive")
    store = open_store(settings)

    def transport(account_id: str) -> NeonizeTransport:
        return NeonizeTransport(account_id, sessions.session(account_id), full_history=settings.sync_full_history)

    daemon = Daemon(settings, store, accounts, transport)
    try:
        trio.run(daemon.run)
    finally:
        store.close()
    return 0


def _pair(settings: Settings, account_id: str, phone: str | None) -> int:
    from wadaemon.whatsapp.neonize_transport import NeonizeTransport
    from wadaemon.whatsapp.sessions import open_sessions

    transport = NeonizeTransport(account_id, open_sessions(settings).session(account_id),
                                 full_history=settings.sync_full_history)

    def show_code(code: str) -> None:
        print(f"On the phone: WhatsApp > Linked devices > Link with phone number, enter: {code}", flush=True)

    paired = transport.pair(phone, on_code=show_code)
    print(f"paired {account_id} as {paired}" if paired else f"pairing {account_id} did not complete")
    return 0 if paired else 1


class ReplayReport(msgspec.Struct, rename="camel"):
    account: str
    file: str
    delivered: int
    skipped_lines: int
    messages_written: int
    history_saved: int
    rejected: int
    pending_updates: int


def _replay(settings: Settings, account_id: str, path: Path) -> int:
    from wadaemon.daemon import Daemon
    from wadaemon.store import open_store
    from wadaemon.whatsapp.replay import ReplayTransport

    if not path.is_file():
        print(f"wadaemon replay: no such file: {path}", file=sys.stderr)
        return 2
    store = open_store(settings)
    transport = ReplayTransport(account_id, path)
    daemon = Daemon(settings, store, [account_id], lambda _: transport, serve=False)

    status = daemon.board.account(account_id)  # kept: the board forgets an account once stopped

    async def replay() -> bool:
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.run)
            runtime = daemon.accounts.get(account_id)
            if runtime is not None:
                await trio.to_thread.run_sync(transport.finished.wait)
                await runtime.wait_drained()
            daemon.stop()
        return runtime is not None

    try:
        owned = trio.run(replay)
    finally:
        store.close()
    if not owned:
        print(f"wadaemon replay: account {account_id} is run by another instance (its lease is held): "
              "stop it first", file=sys.stderr)
        return 2
    report = ReplayReport(
        account=account_id, file=str(path), delivered=transport.delivered,
        skipped_lines=len(transport.bad_lines), messages_written=status.realtime_written,
        history_saved=status.history.saved, rejected=status.rejected,
        pending_updates=status.pending_receipts + status.pending_mutations,
    )
    print(msgspec.json.encode(report).decode())
    for number, reason in transport.bad_lines:
        print(f"{path}:{number}: skipped: {reason}", file=sys.stderr)
    return 1 if transport.bad_lines else 0


if __name__ == "__main__":
    raise SystemExit(main())
