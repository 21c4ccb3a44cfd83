"""HTTP API under load: the threads list and a messages page, 50 concurrent clients, while the
daemon ingests live traffic.

``python -m bench.http_api --backend sqlite|firestore`` (a child of ``python -m bench``) starts
the *server* as another process (``python -m bench.http_api serve``): the real daemon (journal,
actors, HTTP thread) on a store seeded with ``--threads`` threads and ``--messages`` messages of
one account, a simulated phone sending ``--live`` messages per second into those threads the
whole time. This process is the client: aiohttp, ``--clients`` concurrent connections on
loopback, each issuing requests back to back for ``--duration`` seconds per phase:

* ``threads``: ``GET /api/whatsapp/threads/{account}?limit=50``;
* ``messages``: ``GET /api/whatsapp/messages/{account}/{thread}?limit=50``, a thread picked at
  random per request (each holds ``messages / threads`` messages).

Per phase: requests per second and latency percentiles, measured at the client (so they
include the loopback round trip and the client's own scheduling, which only makes them
worse). Target: p99 <= 50 ms for a 50-item page on SQLite.

``--reads worker`` serves SQLite the way every store was read before it offered a local
reader: each read in a worker thread (``python -m bench http`` runs both, side by side).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import ROOT, emit, emulator_store, quiet_logs

ACCOUNT = "bench-http"
TOKEN = "bench-api-token"


# -- the server process -----------------------------------------------------------------------

def serve(args: argparse.Namespace) -> int:
    import trio

    from tests.spine.harness import settings_for
    from wadaemon.daemon import Daemon, fixed_transports
    from wadaemon.domain import MessageDoc, ms_to_datetime
    from wadaemon.store.contract import Store
    from wadaemon.store.sqlite import SqliteStore
    from wadaemon.whatsapp.simphone import SimPhone

    quiet_logs()
    data = Path(args.dir)
    store: Store = SqliteStore(data / "store.sqlite") if args.backend == "sqlite" else emulator_store()
    served: Any = store if args.reads == "local" else _Forwarding(store)
    phone = SimPhone(ACCOUNT, seed=5, chats=args.threads, history_messages=0, lid_ratio=0.0, group_ratio=0.0)
    jids = [chat.jid for chat in phone.chats]
    now_ms = int(time.time() * 1000) - args.messages * 1000
    per_thread = args.messages // len(jids)
    batch: list[MessageDoc] = []
    for n in range(args.messages):
        jid = jids[n % len(jids)]
        ts = now_ms + n * 1000
        batch.append(MessageDoc(
            id=f"SEED{n:07d}", wa_message_id=f"SEED{n:07d}", account_id=ACCOUNT, client_jid=jid,
            thread_id=f"{ACCOUNT}__{jid}", direction="inbound", sender_jid=jid,
            ts_client=ms_to_datetime(ts), ts_client_ms=ts, body=f"seeded message {n}",
            sync_source="history_sync"))
        if len(batch) == 1000:
            _seed(store, batch)
            batch = []
    if batch:
        _seed(store, batch)
    settings = settings_for(data / "daemon", PORT=str(args.port), HOST="127.0.0.1", API_TOKEN=TOKEN)
    daemon = Daemon(settings, served, [ACCOUNT], fixed_transports({ACCOUNT: phone}))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.run)
            phone.run_live(args.live, 3600)
            emit({"ready": True, "loadavg": os.getloadavg()[0], "threads": len(jids), "messages": args.messages, "per_thread": per_thread,
                  "thread_ids": [f"{ACCOUNT}__{jid}" for jid in jids]})
            with trio.open_signal_receiver(signal.SIGTERM) as signals:
                async for _ in signals:
                    break
            daemon.stop()
            nursery.cancel_scope.cancel()

    trio.run(main)
    store.close()
    return 0


class _Forwarding:
    """The store, minus its class's ``local_reader``: reads take the worker-thread way."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def _seed(store: Any, batch: list[Any]) -> None:
    """One seeding batch, retried: a loaded emulator sometimes misses a deadline."""
    from wadaemon.records import summarise
    from wadaemon.store.contract import StoreUnavailable

    for attempt in range(5):
        try:
            store.upsert_messages(batch)
            store.advance_threads(summarise(batch))
            return
        except StoreUnavailable:
            if attempt == 4:
                raise
            time.sleep(1.0)


# -- the client (this process) ----------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(port: int, paths: list[str], clients: int, duration_s: float, server_pid: int) -> dict[str, Any]:
    """Also the server's CPU per request above its idle rate (the live ingest), measured just
    before: on a shared, noisy machine it moves far less than requests per second do."""
    import aiohttp

    idle_began, idle_cpu = time.perf_counter(), cpu_seconds(server_pid)
    await asyncio.sleep(2.0)
    idle_rate = (cpu_seconds(server_pid) - idle_cpu) / (time.perf_counter() - idle_began)

    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + duration_s
    headers = {"Authorization": f"Bearer {TOKEN}"}
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", connector=connector, headers=headers) as session:

        async def client(seed: int) -> None:
            nonlocal errors
            rng = random.Random(seed)
            while time.perf_counter() < deadline:
                path = rng.choice(paths)
                began = time.perf_counter()
                async with session.get(path) as response:
                    body = await response.read()
                latencies.append(time.perf_counter() - began)
                if response.status != 200 or len(body) < 100:
                    errors += 1

        for _ in range(3):  # warm-up: connections open, caches filled
            async with session.get(paths[0]) as response:
                await response.read()
        started, cpu_before = time.perf_counter(), cpu_seconds(server_pid)
        await asyncio.gather(*(client(n) for n in range(clients)))
        elapsed, cpu = time.perf_counter() - started, cpu_seconds(server_pid) - cpu_before
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000

    return {"requests": len(ordered), "errors": errors, "req_per_s": len(ordered) / elapsed,
            "p50_ms": pct(0.50), "p95_ms": pct(0.95), "p99_ms": pct(0.99), "max_ms": ordered[-1] * 1000,
            "mean_ms": statistics.fmean(ordered) * 1000, "server_cpu_ms_per_request": max(0.0, cpu - idle_rate * elapsed) * 1000 / len(ordered),
            "server_idle_cpu_percent": idle_rate * 100}


def client_main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        from tests.ops.demo_process import free_port

        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "bench.http_api", "serve", "--backend", args.backend, "--port", str(port),
             "--dir", tmp, "--threads", str(args.threads), "--messages", str(args.messages), "--live", str(args.live),
             "--reads", args.reads],
            cwd=ROOT, stdout=subprocess.PIPE, text=True, env=os.environ.copy())
        try:
            assert server.stdout is not None
            ready = json.loads(server.stdout.readline())
            thread_ids = ready["thread_ids"]
            results: dict[str, Any] = {"backend": args.backend, "reads": args.reads, "threads": ready["threads"],
                                       "messages": ready["messages"], "clients": args.clients,
                                       "live_per_s": args.live, "duration_s": args.duration,
                                       "loadavg_at_start": ready["loadavg"]}
            results["threads_list"] = asyncio.run(load(port, [f"/api/whatsapp/threads/{ACCOUNT}?limit=50"],
                                                       args.clients, args.duration, server.pid))
            results["messages_page"] = asyncio.run(load(
                port, [f"/api/whatsapp/messages/{ACCOUNT}/{tid}?limit=50" for tid in thread_ids],
                args.clients, args.duration, server.pid))
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    emit(results)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http_api")
    parser.add_argument("role", nargs="?", default="client", choices=["client", "serve"])
    parser.add_argument("--backend", choices=["sqlite", "firestore"], default="sqlite")
    parser.add_argument("--threads", type=int, default=500)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--live", type=float, default=50.0, help="live messages per second during the load")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per phase")
    parser.add_argument("--reads", choices=["local", "worker"], default="local",
                        help="worker: no local reader, every read in a worker thread")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--dir", default="")
    args = parser.parse_args()
    return serve(args) if args.role == "serve" else client_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
